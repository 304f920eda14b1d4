"""Process titles (gunicorn's ``proc_name``, ``-n/--name``): ``appserver: master [NAME]`` and
``appserver: worker [NAME]`` in ps and top, through the setproctitle package (the "proctitle"
extra).  Only when a name is given: setproctitle rewrites the memory that /proc/PID/environ
shows, which tools (and this project's test harness) read to find a server's processes.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("appserver")
_setproctitle: Any = None


def available() -> bool:
    global _setproctitle
    if _setproctitle is None:
        try:
            from setproctitle import setproctitle
        except ImportError:
            return False
        _setproctitle = setproctitle
    return True


def check(name: str | None) -> None:
    """At start, in the master: a name that cannot be shown is said, not silently dropped."""
    if name and not available():
        log.warning("--name %s: process titles need the setproctitle package "
                    "(pip install 'appserver[proctitle]'); the processes keep their titles",
                    name)


def set_title(role: str, name: str | None) -> None:
    """``role``: "master" or "worker"."""
    if name and available():
        _setproctitle(f"appserver: {role} [{name}]")
