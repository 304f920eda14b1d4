"""``environ['wsgi.websocket']`` for the blocking worker classes, and the worker's registry.

Design notes
------------
* The app's thread reads: ``receive()`` blocks in ``recv`` on the socket and feeds the session.
  Any thread may ``send()`` (a chat broadcasts from one connection's thread to the others), so
  every use of the session and every write happens under the object's lock; the lock is never
  held across a blocking ``recv``.
* The handshake completes when the app first calls ``accept()``, ``receive()`` or ``send()``; an
  app that never does answers the upgrade request with an ordinary HTTP response (e.g. a 403).
* Keep-alive pings, idle timeouts and the close frames of a graceful stop are sent by the worker's
  main thread through :class:`Registry`, so they work whatever the app is doing.  A peer that
  leaves a ping unanswered for a whole interval is disconnected (close 1011): its socket is shut
  down, which wakes the app's blocked ``receive()`` with None.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

from .handshake import accept_response
from .keepalive import KeepAlive
from .session import ABNORMAL, NORMAL, WebSocketSession

GOING_AWAY = 1001
SERVICE_RESTART = 1012
RECV_SIZE = 65536
LINGER_LIMIT = 10.0  # longest wait for the peer to end the connection after the close


class WebSocket(KeepAlive):
    """A server-side WebSocket over a blocking socket (gevent-websocket/meinheld style API)."""

    def __init__(self, sock: socket.socket, key: bytes, offered: list[str], *,
                 max_message_size: int, trailing: bytes = b"",
                 on_open: Callable[[WebSocket], None] | None = None) -> None:
        self.sock = sock
        self._key = key
        self.subprotocols = offered          # what the client offered
        self.subprotocol: str | None = None  # what we accepted
        self.session = WebSocketSession(max_message_size)
        self._trailing = trailing
        self._lock = threading.Lock()
        self._on_open = on_open
        self.accepted = False
        self.last_received = self.last_activity = time.monotonic()
        self._init_keepalive()

    # ---- the app's API ----------------------------------------------------------------------

    def accept(self, subprotocol: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        """Complete the handshake, choosing one of ``subprotocols`` (or none)."""
        with self._lock:
            if self.accepted:
                return
            if subprotocol is not None and subprotocol not in self.subprotocols:
                raise ValueError(f"subprotocol {subprotocol!r} was not offered: {self.subprotocols}")
            self.subprotocol = subprotocol
            self.sock.settimeout(None)
            self.sock.sendall(accept_response(self._key, subprotocol, headers))
            self.accepted = True
            if self._trailing:
                self._write(self.session.receive_data(self._trailing))
                self._trailing = b""
        if self._on_open is not None:
            self._on_open(self)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message (str for text, bytes for binary); None once the WebSocket is closed,
        or when ``timeout`` seconds pass without one (then ``closed`` is still False)."""
        if not self.accepted:
            self.accept()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self.session.messages:
                    self.last_activity = time.monotonic()
                    return self.session.messages.popleft()
                if self.session.finished:
                    self._finish_close()
                    return None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            finally:
                if deadline is not None:
                    self._restore_blocking()
            with self._lock:
                now = self.last_received = time.monotonic()
                self._write(self.session.receive_data(data or None))
                if self.session.messages:  # the common case: no second trip through the lock
                    self.last_activity = now
                    return self.session.messages.popleft()

    def send(self, data: str | bytes) -> None:
        if not self.accepted:
            self.accept()
        with self._lock:
            self._write(self.session.send_message(data))
            self.last_activity = time.monotonic()

    # ---- for the server ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if data:
            # A write blocks while the peer's window is full, for ever if it stopped reading;
            # the worker's keep-alive tick cuts a write stuck for an interval.
            self.write_started = time.monotonic()
            try:
                # One send() is enough for a frame that fits the socket buffer (nearly all); a
                # green sendall() costs a getsockopt() call and a memoryview on every use.
                sent = self.sock.send(data)
                if sent < len(data):
                    self.sock.sendall(data[sent:])
            except OSError:
                self.session.receive_data(None)
            finally:
                self.write_started = None

    def _writable(self) -> bool:
        fd = self.sock.fileno()
        if fd < 0:
            return True  # closed: a write fails at once instead of blocking
        try:
            # poll, not select (descriptors past 1023); eventlet's patching removes poll.
            poll = getattr(select, "poll", None)
            if poll is not None:
                poller = poll()
                poller.register(fd, select.POLLOUT)
                return bool(poller.poll(0))
            return bool(select.select([], [fd], [], 0)[1])
        except (OSError, ValueError):
            return True

    def _restore_blocking(self) -> None:
        try:
            self.sock.settimeout(None)
        except OSError:
            pass

    def _finish_close(self) -> None:
        """Once the session ended, shut the TCP connection down (RFC 6455 §7.1.1)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def finish(self, linger: float = 1.0) -> None:
        """After the app returned: complete the closing handshake (briefly) and stop."""
        if not self.accepted:
            return
        self.close(NORMAL)
        # Read until the peer ends the connection: its close frame completes the handshake, and
        # whatever it still sends after ours -- the rest of an over-size message, say -- is read
        # and dropped, so that closing the socket does not answer it with a reset that destroys
        # our close frame on its way (a lingering close).  Bounded three ways: ``linger``
        # seconds of silence, LINGER_LIMIT seconds in all, and twice the message limit in bytes.
        deadline = time.monotonic() + LINGER_LIMIT
        budget = 2 * self.session.max_message_size + RECV_SIZE
        shut = False
        while budget > 0:
            if self.session.closed and not shut:
                self._finish_close()
                shut = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(min(linger, remaining))
            try:
                data = self.sock.recv(RECV_SIZE)
            except OSError:
                break
            if not data:
                break
            budget -= len(data)
            with self._lock:
                self._write(self.session.receive_data(data))

    def _drop(self) -> None:
        """Cut the connection: the app's blocked receive() wakes up and returns None."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.session.close_code is None:
            self.session.close_code = ABNORMAL


class HandedOverSocket:
    """``gunicorn.socket``: the connection handed to a library that speaks WebSocket itself.

    Bytes read together with the request head come out of ``recv`` first, so the library misses
    nothing; and ``send`` sends everything, as on a blocking socket -- a green (gevent, eventlet)
    socket may send only part, which libraries written for blocking sockets do not expect
    (simple-websocket ignores what ``send`` returns).

    The library gets a descriptor of its own (``make()``, e.g. a ``dup``), made only when it first
    uses the socket: an app on the native API never pays a second descriptor per connection."""

    def __init__(self, make: Callable[[], socket.socket], prefix: bytes = b"") -> None:
        self._make = make
        self._real: socket.socket | None = None
        self._prefix = prefix

    @property
    def _sock(self) -> socket.socket:
        if self._real is None:
            self._real = self._make()
        return self._real

    @property
    def used(self) -> bool:
        return self._real is not None

    def discard(self) -> None:
        """The server's side: close the library's descriptor if one was made."""
        if self._real is not None:
            self._real.close()

    def send(self, data: bytes, flags: int = 0) -> int:
        self._sock.sendall(data, flags)
        return len(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self._prefix and not flags:
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._sock.recv(size, flags)

    def recv_into(self, buffer: bytearray | memoryview, size: int = 0, flags: int = 0) -> int:
        if self._prefix and not flags:
            size = min(size or len(buffer), len(self._prefix))
            buffer[:size] = self._prefix[:size]
            self._prefix = self._prefix[size:]
            return size
        return self._sock.recv_into(buffer, size, flags)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


class Registry:
    """The open WebSockets of one worker, for pings, limits and graceful stops."""

    def __init__(self, limit: int, ping_interval: float, idle_timeout: float) -> None:
        self.limit = limit
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self._sockets: set[KeepAlive] = set()
        self._reserved = 0
        self._lock = threading.Lock()
        self._next_tick = 0.0
        # Told the number open after every change (appserver.metrics.recorder); under the lock.
        self.on_change: Callable[[int], None] | None = None

    def reserve(self) -> bool:
        """Claim a place for an upgrade request; False when the worker is full."""
        with self._lock:
            if self._reserved >= self.limit:
                return False
            self._reserved += 1
            return True

    def release(self, ws: KeepAlive | None) -> None:
        with self._lock:
            self._reserved -= 1
            if ws is not None:
                self._sockets.discard(ws)
                if self.on_change is not None:
                    self.on_change(len(self._sockets))

    def opened(self, ws: KeepAlive) -> None:
        with self._lock:
            self._sockets.add(ws)
            if self.on_change is not None:
                self.on_change(len(self._sockets))

    def __len__(self) -> int:
        return self._reserved

    def tick(self, now: float) -> None:
        if now < self._next_tick or not (self.ping_interval or self.idle_timeout):
            return
        self._next_tick = now + min(1.0, (self.ping_interval or self.idle_timeout) / 4)
        with self._lock:
            sockets = list(self._sockets)
        for ws in sockets:
            ws.keepalive(now, self.ping_interval, self.idle_timeout)

    def close_all(self, code: int, reason: str) -> int:
        """Send every open WebSocket a close frame (graceful stop or reload)."""
        with self._lock:
            sockets = list(self._sockets)
        for ws in sockets:
            ws.close(code, reason)
        return len(sockets)
