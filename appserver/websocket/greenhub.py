"""Greenlet hubs: WebSocket handlers of the event-loop workers without a thread each.

Design notes
------------
A native WebSocket handler is ordinary blocking code (``while ws.receive(): ...``).  Run in a
pool thread, each open WebSocket would hold a thread for its whole life.  Instead, the asyncio
and tornado workers run these handlers as greenlets on a few hub threads: when a handler waits
in ``receive()`` it switches back to its hub, which runs other handlers meanwhile; the event loop
resumes it (through the hub's task queue) when a message arrives.  A parked handler costs a
greenlet -- a few KiB -- not a thread.

Greenlets never leave the thread that created them, so each hub is one thread with its own queue.
Handlers spread over the hubs; code that blocks a hub's thread (a synchronous database call in a
WebSocket handler) stalls only the handlers of that hub.  Needs the ``greenlet`` package
(``pip install 'appserver[asyncio]'``, or any install of gevent); without it the handlers run in
threads, as before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
_local = threading.local()

try:
    import greenlet
except ImportError:  # pragma: no cover - exercised where greenlet is not installed
    greenlet = None


def available() -> bool:
    return greenlet is not None


def greenlet_current() -> Any:
    assert greenlet is not None
    return greenlet.getcurrent()


def current_hub() -> GreenHub | None:
    """The hub whose greenlet is running now, if any (None in a plain thread)."""
    hub: GreenHub | None = getattr(_local, "hub", None)
    if hub is None or greenlet is None or greenlet.getcurrent() is hub.root:
        return None
    return hub


class GreenHub:
    def __init__(self, name: str) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self.running = 0
        self.root: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        assert greenlet is not None
        _local.hub = self
        self.root = greenlet.getcurrent()
        self._ready.set()
        while (task := self._tasks.get()) is not None:
            task()

    def submit(self, func: Callable[[], T]) -> Future[T]:
        """Run ``func`` in a new greenlet of this hub."""
        future: Future[T] = Future()

        def body() -> None:
            try:
                future.set_result(func())
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)
            finally:
                self.running -= 1

        def start() -> None:
            assert greenlet is not None
            self.running += 1
            greenlet.greenlet(body, parent=self.root).switch()

        self._tasks.put(start)
        return future

    def resume(self, parked: Any) -> None:
        """Continue a parked greenlet (from any thread)."""
        self._tasks.put(parked.switch)

    def park(self) -> None:
        """In a hub greenlet: give the thread back to the hub until ``resume``."""
        self.root.switch()

    def stop(self) -> None:
        self._tasks.put(None)


class HubPool:
    """A few hubs; each new handler goes to the least busy one."""

    def __init__(self, size: int) -> None:
        self.hubs = [GreenHub(f"appserver-ws-hub-{i}") for i in range(size)]

    def submit(self, func: Callable[[], T]) -> Future[T]:
        return min(self.hubs, key=lambda hub: hub.running).submit(func)

    def stop(self) -> None:
        for hub in self.hubs:
            hub.stop()
