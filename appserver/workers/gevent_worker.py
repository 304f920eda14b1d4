"""The ``gevent`` worker: gevent's monkey-patching and a greenlet per connection.

Needs ``pip install 'appserver[gevent]'``.
"""

from __future__ import annotations

import socket
from typing import Any

from ..sockets import Listener
from .green import GreenWorker


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
