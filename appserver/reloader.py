"""``--reload`` (development): ask the master for a reload when a loaded Python file changes.

It runs in each worker, after the app is imported, polling the files of the loaded modules once a
second; on a change it sends HUP to the master, which starts fresh workers (the new code) and
retires the old ones.  Several workers may notice the same change: the master ignores a HUP while
a reload is in progress.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("appserver.worker")


def _module_files() -> dict[str, float]:
    mtimes: dict[str, float] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith((".py", ".pyc")) or "site-packages" in path:
            continue
        try:
            mtimes[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return mtimes


def start_reloader(master_pid: int, interval: float = 1.0) -> threading.Thread:
    def watch() -> None:
        known = _module_files()
        while True:
            time.sleep(interval)
            current = _module_files()
            changed = [path for path, mtime in current.items() if known.get(path, mtime) != mtime]
            if changed:
                log.info("reload: %s changed; asking the master to reload", changed[0])
                os.kill(master_pid, signal.SIGHUP)
                return
            known.update(current)

    thread = threading.Thread(target=watch, name="appserver-reloader", daemon=True)
    thread.start()
    return thread
