"""``--reload`` (development): ask the master for a reload when a loaded Python file changes.

It runs in each worker, after the app is imported, polling the files of the loaded modules once a
second, and the ``--reload-extra-file`` entries (glob patterns expanded again at every check, as
gunicorn does, so that a template created later is watched too: its first edit reloads, not its
creation); on a change it sends HUP to the master, which starts fresh workers (the new code) and
retires the old ones.  Several workers may notice the same change: the master ignores a HUP while
a reload is in progress.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("appserver.worker")


GLOB_CHARS = ("*", "?", "[")


def _watched(extra: Sequence[str]) -> list[str]:
    paths = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith((".py", ".pyc")) and "site-packages" not in path:
            paths.append(path)
    for entry in extra:
        if any(char in entry for char in GLOB_CHARS):
            paths.extend(glob.glob(entry, recursive=True))
        else:
            paths.append(entry)
    return paths


def _mtimes(extra: Sequence[str]) -> dict[str, float]:
    mtimes: dict[str, float] = {}
    for path in _watched(extra):
        try:
            mtimes[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return mtimes


def start_reloader(master_pid: int, interval: float = 1.0,
                   extra: Sequence[str] = ()) -> threading.Thread:
    def watch() -> None:
        known = _mtimes(extra)
        while True:
            time.sleep(interval)
            current = _mtimes(extra)
            changed = [path for path, mtime in current.items() if known.get(path, mtime) != mtime]
            if changed:
                log.info("reload: %s changed; asking the master to reload", changed[0])
                os.kill(master_pid, signal.SIGHUP)
                return
            known.update(current)

    thread = threading.Thread(target=watch, name="appserver-reloader", daemon=True)
    thread.start()
    return thread
