"""The ``gevent`` worker: gevent's monkey-patching and a greenlet per connection.

Needs ``pip install 'appserver[gevent]'``.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from ..sockets import Listener
from .green import GreenWorker, kernel_socket


class GeventIO:
    """gevent's kernel socket (``_sock``, non-blocking) and its hub's wait (pump.GreenIO)."""

    def __init__(self) -> None:
        from gevent.socket import wait_read, wait_write

        self._waits = {select.POLLIN: wait_read, select.POLLOUT: wait_write}

    def raw(self, sock: socket.socket) -> socket.socket | None:
        return kernel_socket(getattr(sock, "_sock", None))

    def wait(self, raw: socket.socket, event: int, timeout: float) -> None:
        self._waits[event](raw.fileno(), timeout, TimeoutError("timed out"))


class GeventWorker(GreenWorker):
    def patch(self) -> None:
        from gevent import monkey

        monkey.patch_all()

    def sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

    def start_servers(self) -> None:
        from gevent.pool import Pool
        from gevent.server import StreamServer

        self.green_io = GeventIO()
        self.pool = Pool(self.config.worker_connections)
        self.servers = []
        for listener in self.listeners:
            # A gevent socket on the inherited descriptor (socket.socket is gevent's now).
            sock = socket.socket(listener.sock.family, socket.SOCK_STREAM, fileno=listener.sock.fileno())
            sock.setblocking(False)

            def handle(client: socket.socket, peer: Any, listener: Listener = listener) -> None:
                self.handle(client, peer, listener)

            server = StreamServer(sock, handle=handle, spawn=self.pool)
            server.start()
            self.servers.append((server, sock))

    def stop_accepting(self) -> None:
        for server, _ in self.servers:
            server.stop_accepting()

    def stop_servers(self) -> None:
        for server, sock in self.servers:
            server.stop_accepting()
            sock.detach()  # the descriptor belongs to the Listener; never closed twice

    def active(self) -> int:
        return len(self.pool)

    def kill_all(self) -> None:
        self.pool.kill(block=True, timeout=1)
