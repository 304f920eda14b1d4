"""The local fan-out: one hub per worker process hands each published message to the
subscriptions of its room, each through a bounded queue of its own.

Design notes
------------
* Whoever dispatches -- the Redis listener thread, or the publisher itself on the in-process
  backend -- never waits for a consumer: ``offer`` appends to a subscription's queue under a
  lock held for a few instructions, or, when the queue is full, ends that subscription with
  :data:`OVERFLOW` (close code 1013, "try again later").  A slow WebSocket client therefore costs
  only its own queue, and never delays the others.
* Dispatch runs under one lock per hub, so the subscriptions of a room see the messages in one
  and the same order (the order Redis, or the in-process backend, put them in).
* Two kinds of subscription share that contract: :class:`Subscription` blocks in ``get()`` (a
  thread, or a greenlet under gevent/eventlet, whose ``threading`` they patch), and
  :class:`AsyncSubscription` is awaited on the event loop that created it; the dispatcher wakes
  it with ``call_soon_threadsafe``, so it may run on any thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal

OVERFLOW = 1013  # RFC 6455 §7.4.1 "Try Again Later" (IANA registry): see docs/broadcast.md

EventType = Literal["message", "lost", "restored"]


@dataclass(frozen=True, slots=True)
class Event:
    """What a subscription yields: a ``message`` (``data`` as published), or a change of the
    link to the other processes -- ``lost`` (messages published until ``restored`` do not
    arrive here) and ``restored``."""

    type: EventType
    room: str
    data: str = ""


class _Base:
    """The queue and its bound, shared by both kinds of subscription."""

    def __init__(self, hub: Hub, room: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue_size must be at least 1, not {maxsize}")
        self.room = room
        self.maxsize = maxsize
        self._hub = hub
        self._queue: deque[Event] = deque()
        self._lock = threading.Lock()
        self.closed = False
        # 1013 once the queue overflowed (the consumer fell behind); None for an ordinary close.
        self.close_code: int | None = None

    def offer(self, event: Event) -> bool:
        """For the hub: queue ``event``; False (and closed with OVERFLOW) when the queue is full."""
        with self._lock:
            if self.closed:
                return True
            if len(self._queue) >= self.maxsize:
                self.closed = True
                self.close_code = OVERFLOW
                self._queue.clear()  # nothing more is delivered to a consumer that fell behind
                overflowed = True
            else:
                self._queue.append(event)
                overflowed = False
        self._wake()
        return not overflowed

    def close(self) -> None:
        """Leave the room; a waiting ``get()`` returns None.  Idempotent."""
        with self._lock:
            self.closed = True
        self._hub.remove(self)
        self._wake()

    def _wake(self) -> None:
        raise NotImplementedError


class Subscription(_Base):
    """A room's messages for blocking code (threads, greenlets).  Use it as a context manager,
    or ``close()`` it, when the WebSocket ends."""

    def __init__(self, hub: Hub, room: str, maxsize: int) -> None:
        super().__init__(hub, room, maxsize)
        self._ready = threading.Condition(self._lock)

    def _wake(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None once closed (``close_code`` says why) or after ``timeout``
        seconds without one (then ``closed`` is still False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._queue:
                if self.closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._ready.wait(remaining)
            return self._queue.popleft()

    def __iter__(self) -> Iterator[Event]:
        while (event := self.get()) is not None:
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription(_Base):
    """A room's messages for asyncio code; create it (``Broadcast.subscribe_async``) on the
    loop that reads it."""

    def __init__(self, hub: Hub, room: str, maxsize: int) -> None:
        super().__init__(hub, room, maxsize)
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    async def get(self) -> Event | None:
        """The next event; None once closed (``close_code`` says why)."""
        while True:
            with self._lock:
                if self._queue:
                    return self._queue.popleft()
                if self.closed:
                    return None
                self._ready.clear()
            await self._ready.wait()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """The subscriptions of one process, by room."""

    def __init__(self) -> None:
        self._rooms: dict[str, set[_Base]] = {}
        self._lock = threading.Lock()        # membership
        self._dispatch = threading.Lock()    # one order of delivery for everyone
        self.connected = True                # the backend's link (False while Redis is away)

    def add(self, sub: _Base) -> None:
        with self._lock:
            self._rooms.setdefault(sub.room, set()).add(sub)
            if not self.connected:
                sub.offer(Event("lost", sub.room))

    def remove(self, sub: _Base) -> None:
        with self._lock:
            members = self._rooms.get(sub.room)
            if members is not None:
                members.discard(sub)
                if not members:
                    del self._rooms[sub.room]

    def count(self, room: str) -> int:
        with self._lock:
            return len(self._rooms.get(room, ()))

    def deliver(self, room: str, data: str) -> int:
        """Hand a message to every subscription of ``room`` here; return how many took it."""
        with self._dispatch:
            with self._lock:
                members = list(self._rooms.get(room, ()))
            return self._offer_all(members, Event("message", room, data))

    def link(self, up: bool) -> None:
        """The backend lost (False) or regained (True) its link: tell every subscription."""
        with self._dispatch:
            if up == self.connected:
                return
            self.connected = up
            with self._lock:
                members = [sub for subs in self._rooms.values() for sub in subs]
            for sub in members:
                sub.offer(Event("restored" if up else "lost", sub.room))
                if sub.closed:
                    self.remove(sub)

    def _offer_all(self, members: list[_Base], event: Event) -> int:
        taken = 0
        for sub in members:
            if sub.offer(event):
                taken += 1
            else:
                self.remove(sub)  # overflowed: it has left the room
        return taken
