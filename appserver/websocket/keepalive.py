"""What the WebSocket objects of every worker class share: closing, keep-alive pings and the
idle limit.

The worker's main loop (thread or event loop) calls ``keepalive(now, ...)`` on each open
WebSocket: it sends a ping when the peer has been silent for an interval, fails the connection
(close 1011) when that ping is not answered within another interval, and closes (1000) one that
exchanged no message for ``idle_timeout`` seconds.  Pongs (and pings) are not messages: a client
that answers every ping but says nothing is still idle.  A peer that does not answer the idle
close within an interval (at most ``CLOSE_TIMEOUT``) is cut off, so it cannot hold a thread.
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
        with self._lock:
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

