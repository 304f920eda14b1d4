"""What the WebSocket objects of every worker class share: closing, keep-alive pings and the
idle limit.

The worker's main loop (thread or event loop) calls ``keepalive(now, ...)`` on each open
WebSocket: it sends a ping when the peer has been silent for an interval, fails the connection
(close 1011) when that ping is not answered within another interval, and closes (1000) one that
exchanged no message for ``idle_timeout`` seconds.  Pongs (and pings) are not messages: a client
that answers every ping but says nothing is still idle.  A peer that does not answer the idle
close within an interval (at most ``CLOSE_TIMEOUT``) is cut off, so it cannot hold a thread.

The main loop never waits for a WebSocket's lock: another thread may hold it for as long as a
write blocks, which is forever when the peer stopped reading and its window is full (a stalled
chat client, written to by a relay thread).  A tick that finds the lock taken is skipped.  A
write that has been blocked for a whole ping interval (or ``CLOSE_TIMEOUT`` without pings;
``write_started`` says since when) is stuck, and the connection is cut: that frees the writer
(EPIPE), so one stalled peer costs neither the worker's heartbeat nor a thread forever.  Nor
does the loop write a ping into a socket with no room (``_writable``): that write would block
the loop itself; a socket that stays full for an interval is cut the same way.
"""

from __future__ import annotations

from typing import Any

from .session import NORMAL, WebSocketSession

PING_TIMEOUT = 1011
CLOSE_TIMEOUT = 10.0  # longest wait for the answer to our idle close


class KeepAlive:
    session: WebSocketSession
    accepted: bool
    last_received: float
    last_activity: float
    _lock: Any  # a Lock or Condition guarding the session

    def _init_keepalive(self) -> None:
        self.ping_sent_at: float | None = None
        self._pongs_seen = 0
        self._data_frames_seen = 0
        self.idle_closed_at: float | None = None
        # When the write in progress began (set by the classes whose writes can block).
        self.write_started: float | None = None
        self.full_since: float | None = None  # the first tick that found no room to write

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake; ``receive()`` returns None once the peer answers."""
        if not self.accepted:
            return
        with self._lock:
            self._write(self.session.close(code, reason))

    @property
    def closed(self) -> bool:
        return self.session.finished

    @property
    def close_code(self) -> int | None:
        return self.session.close_code

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        """Cut the connection so that a waiting receive() returns None."""
        raise NotImplementedError

    def keepalive(self, now: float, interval: float, idle_timeout: float) -> None:
        if not self.accepted:
            return
        if self.session.finished:
            closed_at = self.idle_closed_at
            if closed_at is not None and not self.session.closed \
                    and now - closed_at >= min(interval or CLOSE_TIMEOUT, CLOSE_TIMEOUT):
                self.idle_closed_at = None
                self._drop()  # our close was never answered
            return
        limit = interval or CLOSE_TIMEOUT
        started = self.write_started
        if started is not None and now - started >= limit:
            self._drop()  # a write stuck for an interval: the peer stopped reading
            return
        if not self._lock.acquire(blocking=False):
            return  # a write in progress (see the module's notes); the next tick looks again
        try:
            if not self._writable():  # (under the lock: no other thread fills it meanwhile)
                if self.full_since is None:
                    self.full_since = now
                elif now - self.full_since >= limit:
                    self._drop()
                return
            self.full_since = None
            self._locked_keepalive(now, interval, idle_timeout)
        finally:
            self._lock.release()

    def _writable(self) -> bool:
        """Whether a control frame can be written now without blocking (overridden where
        writes can block)."""
        return True

    def _locked_keepalive(self, now: float, interval: float, idle_timeout: float) -> None:
        if self.session.pongs != self._pongs_seen:
            self._pongs_seen = self.session.pongs
            self.ping_sent_at = None
        if self.session.data_frames != self._data_frames_seen:
            self._data_frames_seen = self.session.data_frames
            self.last_activity = max(self.last_activity, now)
        if idle_timeout and now - self.last_activity >= idle_timeout:
            self._write(self.session.close(NORMAL, "idle timeout"))
            self.idle_closed_at = now
            return
        if not interval:
            return
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at >= interval:
                self._write(self.session.fail(PING_TIMEOUT, "keepalive ping timeout"))
                self._drop()
        elif now - self.last_received >= interval:
            self.ping_sent_at = now
            self._write(self.session.ping(b"appserver"))

