"""``--spew``: print every Python line a worker executes (gunicorn's "nuclear option").

A trace function (``sys.settrace`` for the calling thread, ``threading.settrace`` for every
thread started afterwards: the gthread pool, the asyncio class's app threads) writes one line
per executed line, ``MODULE:LINE: SOURCE``, to stdout, as gunicorn's does.  Installed in each
worker before it loads the app, so imports are traced too; the master is not traced (its loop
would drown the workers' lines).  The trace function itself is never traced (CPython turns
tracing off while it runs), and it writes without taking the logging lock.
"""

from __future__ import annotations

import linecache
import sys
import threading
from types import FrameType
from typing import Any


def trace(frame: FrameType, event: str, arg: Any) -> Any:
    """The trace function: a line event prints; every event keeps tracing the frame."""
    if event == "line":
        lineno = frame.f_lineno
        name = frame.f_globals.get("__name__", "?")
        source = linecache.getline(frame.f_code.co_filename, lineno).rstrip()
        if not source:
            source = f"<no source: {frame.f_code.co_name}>"
        try:
            sys.stdout.write(f"{name}:{lineno}: {source}\n")
        except (OSError, ValueError):  # stdout closed: stop printing, keep running
            return None
    return trace


def install() -> None:
    """Trace this thread and every thread started from now on."""
    threading.settrace(trace)
    sys.settrace(trace)
