"""The asyncio worker's app threads: WSGI calls handed over from the event loop and back.

Design notes
------------
Each WSGI request crosses between the loop thread and an app thread twice.  Through
``loop.run_in_executor`` every crossing also built a ``concurrent.futures.Future``, an
``asyncio.Future`` chained to it, a work item, two done-callbacks and a wake-up of the loop per
request, and ThreadPoolExecutor checked an idle semaphore (Python-level locking) per submission.
Profiled under load, that hand-off was the largest part of the class's CPU.  Here:

* the loop puts ``(call, callback)`` on a ``queue.SimpleQueue`` (C) that the app threads block
  on;
* a thread hands everything it has for the loop -- a streamed piece of a response, a 100
  Continue, a request to resume reading, and last the call's result -- to :meth:`post`, which
  appends to one deque and wakes the loop only when no wake-up is already pending, so under
  load one wake-up carries many of them.  One ordered channel matters: a completion batched
  into a wake-up scheduled earlier must not overtake writes its request made through another
  route (``call_soon_threadsafe``), or the connection would close before its response is out;
* threads start on demand, up to the pool's size, but only when calls wait in the queue and no
  thread has taken one for ``RAMP`` seconds: the threads exist to wait on blocking calls, and
  under the GIL every runnable thread beyond the few that keep up only adds hand-offs of the
  GIL (each a context switch).  A hello world through nginx at 32 connections per worker then
  runs on one or two threads instead of 32, at about a fifth less CPU per request; an app that
  blocks (a 50 ms query) still gets a thread per waiting call within ``RAMP`` each.  A timer
  rechecks while calls wait, so a burst submitted at once still ramps up.

The wake-up flag is reset before the loop drains the deque: a completion appended after the
last pop finds the flag clear and schedules another drain, so none is ever left behind (at worst
a drain finds nothing).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

log = logging.getLogger("appserver.worker")

Callback = Callable[[Any, BaseException | None], None]
_STOP = None
RAMP = 0.002  # seconds without a call taken while calls wait: one more thread


class AppPool:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, name: str) -> None:
        self.loop = loop
        self.size = size
        self.name = name
        # When each busy thread began its call (thread ident: monotonic time), for the worker's
        # stuck-pool check.
        self.started: dict[int, float] = {}
        self.pending = 0  # calls submitted and not yet called back (loop thread only)
        self.last_taken = 0.0  # when a thread last took a call (monotonic; any thread stores)
        self._ramp_timer: asyncio.TimerHandle | None = None
        self._calls: SimpleQueue[tuple[Callable[[], Any], Callback] | None] = SimpleQueue()
        self._inbox: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._wake_pending = False
        self._threads: list[threading.Thread] = []

    def submit(self, call: Callable[[], Any], callback: Callback) -> None:
        """Run ``call()`` in an app thread; ``callback(result, error)`` follows in the loop."""
        self.pending += 1
        self._calls.put((call, callback))
        if not self._threads:
            self._add_thread()
        elif self._ramp_timer is None and self.pending > len(self._threads) < self.size:
            self._ramp()

    def _ramp(self) -> None:
        """While calls wait: one more thread if none was taken for RAMP seconds; check again."""
        self._ramp_timer = None
        if self._calls.empty() or len(self._threads) >= self.size:
            return
        if time.monotonic() - self.last_taken >= RAMP:
            self._add_thread()
        self._ramp_timer = self.loop.call_later(RAMP, self._ramp)

    def _add_thread(self) -> None:
        self.last_taken = time.monotonic()  # (it takes one at once)
        thread = threading.Thread(target=self._run, daemon=True,
                                  name=f"{self.name}_{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def post(self, func: Callable[..., None], *args: Any) -> None:
        """Call ``func(*args)`` in the loop, after everything posted before (from any thread)."""
        self._inbox.append((func, args))
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._drain)

    def shutdown(self) -> None:
        """Let the threads end after their current call (calls still queued are dropped)."""
        if self._ramp_timer is not None:
            self._ramp_timer.cancel()
        for _ in self._threads:
            self._calls.put(_STOP)

    # ---- app threads ----

    def _run(self) -> None:
        calls, started = self._calls, self.started
        ident = threading.get_ident()
        while (item := calls.get()) is not _STOP:
            call, callback = item
            started[ident] = self.last_taken = time.monotonic()
            try:
                result, error = call(), None
            except BaseException as exc:  # handed to the loop, as a Future would
                result, error = None, exc
            started.pop(ident, None)
            try:
                self.post(self._complete, callback, result, error)
            except RuntimeError:  # the loop is closed: the worker is ending
                return
            del item, call, callback, result, error

    # ---- loop thread ----

    def _drain(self) -> None:
        self._wake_pending = False
        inbox = self._inbox
        while inbox:
            func, args = inbox.popleft()
            try:
                func(*args)
            except Exception:  # one request's failure must not strand what others posted
                log.exception("unexpected error in the loop's part of a request")

    def _complete(self, callback: Callback, result: Any, error: BaseException | None) -> None:
        self.pending -= 1
        callback(result, error)
