"""What the master remembers: the folded totals of ended workers, and why workers ended.

Design notes
------------
A worker's counters live in its map only while it runs; when the master reaps it, it adds the
map's final values to :attr:`Totals.folded` and closes the map, so a counter summed over the
live workers plus the folded totals never goes backwards when a worker is recycled.  Reaping
(the master's main thread) and scraping (a listener thread) both take :attr:`Totals.lock`, so a
scrape sees a worker either in the live set or in the folded totals, never both or neither.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..policy import Reason
from .shm import COUNTER_SLOTS

if TYPE_CHECKING:
    from .shm import WorkerCounters

# Why a worker was replaced: appserver_worker_restarts_total{reason}.
RESTART_REASONS = ("timeout", "killed", "memory", "max_requests", "crashed", "boot_failed",
                   "reload")
RECENT = 20  # restarts kept for `appserver status`


@dataclass(frozen=True)
class Restart:
    at: float          # time.time()
    pid: int
    generation: int
    reason: str
    message: str


def restart_reason(reason: Reason, *, asked_to_stop: bool, stop_for_restart: bool,
                   retiring: str) -> str | None:
    """The restart reason of a worker's end (None: it was not replaced -- a graceful stop or a
    smaller worker count).  ``retiring``: what the worker said when it retired itself."""
    if reason is Reason.TIMEOUT_KILL:
        return "timeout"
    if reason is Reason.EXTERNAL_SIGNAL:
        return "killed"
    if reason in (Reason.APP_LOAD_ERROR, Reason.BOOT_ERROR):
        return "boot_failed"
    if reason is Reason.CRASHED:
        return "crashed"
    if asked_to_stop:  # stopped, or killed past the graceful timeout
        return "reload" if stop_for_restart else None
    return retiring or "crashed"  # exited 0 on its own without saying why


class Totals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folded: list[float] = [0] * len(COUNTER_SLOTS)
        self.restarts: Counter[str] = Counter()
        self.recent: deque[Restart] = deque(maxlen=RECENT)
        self.started_at = time.time()

    def fold(self, counters: WorkerCounters) -> None:
        """Add an ended worker's final counts (the caller holds :attr:`lock`)."""
        for index, value in enumerate(counters.snapshot()):
            self.folded[index] += value

    def restarted(self, pid: int, generation: int, reason: str, message: str) -> None:
        self.restarts[reason] += 1
        self.recent.append(Restart(time.time(), pid, generation, reason, message))
