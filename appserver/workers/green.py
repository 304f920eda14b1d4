"""What the green worker classes (gevent, eventlet) share: a greenlet per connection running the
blocking byte pump, a ticker for the heartbeat, and the graceful stop.

Design notes
------------
The standard library is monkey-patched in ``patch()`` (before the app is imported), so the pump's
blocking socket calls, the app's, and ``threading`` locks all yield to the hub instead of
blocking the process.  Up to ``--worker-connections`` connections are served at once, each in its
own greenlet, with keep-alive (the pump waits ``--keep-alive`` seconds for the next request).

The heartbeat is beaten by a ticker greenlet: if the app blocks the hub (CPU-bound code that never
yields), the ticker stops, and the master's timeout kill ends the worker -- which is right, since
no other connection of this worker is being served meanwhile.

Graceful stop: the listeners close, WebSocket clients get their close frame, connections waiting
for a next request are closed, in-flight requests finish within ``--graceful-timeout``.
"""

from __future__ import annotations

import _socket
import socket
import time
from typing import Any

from ..sockets import Listener
from .base import Worker, log
from .pump import IDLE_CLOSE_DURING_STOP, Connection, GreenIO, has_data


def kernel_socket(candidate: object) -> socket.socket | None:
    """``candidate`` -- the attribute under a library's green socket that holds the socket it
    wraps -- if that is a kernel socket in non-blocking mode (pump.GreenIO.raw), else None."""
    if isinstance(candidate, _socket.socket) and candidate.gettimeout() == 0.0:
        return candidate  # type: ignore[return-value]
    return None


class GreenWorker(Worker):
    multithread = True  # requests of one process run concurrently (in greenlets)
    holds_connections = True
    # The library's way to the kernel socket and its hub (see pump's notes); set by start_servers.
    green_io: GreenIO | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[Connection] = set()

    # ---- to be provided by each library -----------------------------------------------------

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def start_servers(self) -> None:
        """Start accepting on every listener, calling ``handle(sock, peer, listener)``."""
        raise NotImplementedError

    def stop_accepting(self) -> None:
        """Accept no new connection (without waiting: called from a request's greenlet)."""
        raise NotImplementedError

    def stop_servers(self) -> None:
        raise NotImplementedError

    def active(self) -> int:
        """Greenlets still serving connections."""
        raise NotImplementedError

    def kill_all(self) -> None:
        raise NotImplementedError

    # ---- shared -------------------------------------------------------------------------------

    def serve(self) -> None:
        self.start_servers()
        self.state.on_retire = self._retire_now
        registry = self.state.websockets
        while self.alive:
            self.tick()
            if registry is not None:
                registry.tick(time.monotonic())
            self.sleep(0.25)
        self._graceful_stop()

    def _retire_now(self) -> None:
        """--max-requests reached (in a connection's greenlet): stop accepting at once."""
        self.retire_for_max_requests()
        self.stop_accepting()

    def handle(self, sock: socket.socket, peer: Any, listener: Listener) -> None:
        if not listener.is_unix:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = Connection(sock, peer, listener.local, listener.is_unix, self.state,
                          green=self.green_io)
        self.connections.add(conn)
        try:
            conn.handle()
        finally:
            self.connections.discard(conn)
            conn.close()

    def _graceful_stop(self) -> None:
        self.state.stopping = True
        self.stop_servers()
        self.close_websockets()
        deadline = time.monotonic() + self.config.graceful_timeout
        while self.active() and time.monotonic() < deadline:
            self.heartbeat.beat()
            now = time.monotonic()
            for conn in list(self.connections):
                # Only a connection idle for a while, with nothing sent yet: the last response
                # promised keep-alive, so a busy client may be sending its next request (which
                # gets Connection: close) -- closing under it would fail that request.
                if conn.waiting_idle and now - conn.idle_since >= IDLE_CLOSE_DURING_STOP \
                        and not has_data(conn.sock):
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)  # wakes its greenlet: a quiet close
                    except OSError:
                        pass
            self.sleep(0.05)
        if self.active():
            log.warning("worker %d: %d connections still busy after the graceful timeout (%ds)",
                        self.pid, self.active(), self.config.graceful_timeout)
            self.kill_all()
