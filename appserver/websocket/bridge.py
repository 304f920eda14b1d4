"""``environ['wsgi.websocket']`` for event-loop workers (asyncio, tornado).

Design notes
------------
The event loop owns the socket: it feeds received bytes to the session (``feed``) and writes what
the session produces.  The app runs in a pool thread and waits on a condition variable for
messages; its ``send()`` hands bytes to the loop with ``call_soon_threadsafe``.  The condition's
lock guards the session, which both threads use.  Writes respect the transport's flow control:
a sender waits while the loop reports the transport paused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from .greenhub import GreenHub, current_hub, greenlet_current
from .handshake import accept_response
from .keepalive import KeepAlive
from .session import ABNORMAL, NORMAL, WebSocketSession

LINGER_IDLE = 1.0    # seconds of silence that end a lingering close
LINGER_LIMIT = 10.0  # longest lingering close


class LoopWebSocket(KeepAlive):
    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, key: bytes,
                 offered: list[str], *, max_message_size: int, can_write: threading.Event,
                 on_open: Callable[[LoopWebSocket], None]) -> None:
        self.loop = loop
        self.transport = transport
        self._key = key
        self.subprotocols = offered
        self.subprotocol: str | None = None
        self.session = WebSocketSession(max_message_size)
        self._lock = threading.Condition()
        self._can_write = can_write
        self._on_open = on_open
        self.accepted = False
        self.last_received = self.last_activity = time.monotonic()
        self._parked: tuple[GreenHub, Any] | None = None
        self._linger_until: float | None = None
        self._linger_budget = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        self._init_keepalive()

    # ---- the app's API (any thread) ---------------------------------------------------------

    def accept(self, subprotocol: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        with self._lock:
            if self.accepted:
                return
            if subprotocol is not None and subprotocol not in self.subprotocols:
                raise ValueError(f"subprotocol {subprotocol!r} was not offered: {self.subprotocols}")
            self.subprotocol = subprotocol
            self.accepted = True
            response = accept_response(self._key, subprotocol, headers)
        self.loop.call_soon_threadsafe(self._opened, response)

    def _opened(self, response: bytes) -> None:  # in the loop
        self.transport.write(response)
        self._on_open(self)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        if not self.accepted:
            self.accept()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self.session.messages:
                    self.last_activity = time.monotonic()
                    return self.session.messages.popleft()
                if self.session.finished:
                    return None
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                self._wait(wait)

    def send(self, data: str | bytes) -> None:
        if not self.accepted:
            self.accept()
        self._can_write.wait(30.0)  # the loop clears it while the transport's buffer is full
        with self._lock:
            self._write(self.session.send_message(data))
            self.last_activity = time.monotonic()

    def finish(self, linger: float = 1.0) -> None:
        """After the app returned (in its thread): close, and wait briefly for the peer's reply."""
        if not self.accepted:
            return
        self.close(NORMAL)
        deadline = time.monotonic() + linger
        with self._lock:
            while not self.session.closed and time.monotonic() < deadline:
                self._wait(deadline - time.monotonic())

    def _wait(self, timeout: float | None) -> None:
        """Wait (holding ``_lock``) until ``feed`` or ``_drop`` wakes us, or ``timeout`` passes.
        In a hub greenlet the thread is given back to the hub meanwhile (see greenhub)."""
        hub = current_hub()
        if hub is None:
            self._lock.wait(timeout)
            return
        self._parked = (hub, greenlet_current())
        if timeout is not None:
            self.loop.call_soon_threadsafe(self.loop.call_later, max(0.0, timeout), self._wake)
        self._lock.release()
        try:
            hub.park()
        finally:
            self._lock.acquire()

    def _wake(self) -> None:
        """Resume a handler parked in ``_wait`` (any thread)."""
        with self._lock:
            parked, self._parked = self._parked, None
            self._lock.notify_all()
        if parked is not None:
            parked[0].resume(parked[1])

    # ---- the loop's side ----------------------------------------------------------------------

    def feed(self, data: bytes | None) -> None:
        with self._lock:
            self.last_received = time.monotonic()
            out = self.session.receive_data(data)
            if out:
                self.transport.write(out)
        self._wake()
        if data is None:
            self.transport.close()
        elif self.session.closed:
            self._linger(len(data))

    def end_in_loop(self) -> None:
        """The handler has returned: close once the peer has ended its side (or gone quiet),
        not under bytes it is still sending (the rest of an over-size message, through nginx:
        nginx then logged a broken pipe)."""
        if not self.transport.is_closing() and self._linger_until is None:
            self._linger(0)

    def _linger(self, received: int) -> None:
        """The session is over but the peer still sends: half-close, keep reading (and dropping)
        until it ends the connection, then close -- closing with unread bytes would answer them
        with a reset that can destroy our close frame on its way (see blocking.finish).  Bounded
        by LINGER_IDLE seconds of silence, LINGER_LIMIT in all and twice the message limit."""
        now = time.monotonic()
        if self._linger_until is None:
            self._linger_until = now + LINGER_LIMIT
            self._linger_budget = 2 * self.session.max_message_size
            if self.transport.can_write_eof():
                self.transport.write_eof()
        else:
            self._linger_budget -= received
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._linger_budget <= 0 or now >= self._linger_until:
            self.transport.close()
            return
        self._linger_timer = self.loop.call_later(min(LINGER_IDLE, self._linger_until - now),
                                                  self.transport.close)

    def _write(self, data: bytes) -> None:
        if data:
            if self.loop.is_closed():
                return
            self.loop.call_soon_threadsafe(self._write_in_loop, data)

    def _write_in_loop(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def _drop(self) -> None:
        if self.session.close_code is None:
            self.session.close_code = ABNORMAL
        self.loop.call_soon_threadsafe(self.transport.abort)
        self._wake()
