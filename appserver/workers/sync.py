"""The ``sync`` worker: one request at a time per process, each response closes its connection.

Like gunicorn's sync worker it relies on nginx in front to buffer slow clients; unlike it, a head
that trickles in is cut off after ``--header-timeout`` rather than at the worker timeout.
"""

from __future__ import annotations

import select
import socket

from .base import Worker
from .pump import Connection


class SyncWorker(Worker):
    uses_keep_alive = False

    def serve(self) -> None:
        listeners = self.listeners
        for listener in listeners:
            listener.sock.setblocking(False)
        watched = [listener.sock for listener in listeners] + [self.wakeup_r]
        timeout = self._select_timeout()
        while self.alive:
            self.tick()
            if not self.alive:
                break
            served = False
            for listener in listeners:
                # Accept until the queue is empty before sleeping again: under load this saves a
                # select() per request.
                while self.alive and not self.state.stopping:
                    try:
                        sock, peer = listener.sock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionAbortedError:
                        continue
                    served = True
                    self._serve_one(sock, peer, listener.local, listener.is_unix)
                    self.tick()
            if served:
                continue
            try:
                readable, _, _ = select.select(watched, [], [], timeout)
            except InterruptedError:
                continue
            if self.wakeup_r in readable:
                self.drain_wakeup()

    def _serve_one(self, sock: socket.socket, peer: object, local: object, is_unix: bool) -> None:
        sock.setblocking(True)
        if not is_unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock, peer, local, is_unix, self.state)
        try:
            conn.handle()
        finally:
            conn.close()

    def _select_timeout(self) -> float:
        # Wake often enough to beat well inside the timeout (and to notice signals promptly).
        timeout = self.config.timeout
        return 1.0 if not timeout else max(0.05, min(1.0, timeout / 4))
