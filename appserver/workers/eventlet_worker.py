"""The ``eventlet`` worker: eventlet's monkey-patching and a green thread per connection.

Needs ``pip install 'appserver[eventlet]'``.  (eventlet is in maintenance mode upstream; gevent
is the better choice for new deployments.)
"""

from __future__ import annotations

import contextlib
import errno
import io
import select
import socket
from typing import Any

from ..sockets import Listener
from .base import log
from .green import GreenWorker, kernel_socket


class EventletIO:
    """eventlet's kernel socket (``fd``, non-blocking) and its hub's wait (pump.GreenIO)."""

    def __init__(self) -> None:
        from eventlet.hubs import trampoline

        self._trampoline = trampoline

    def raw(self, sock: socket.socket) -> socket.socket | None:
        return kernel_socket(getattr(sock, "fd", None))

    def wait(self, raw: socket.socket, event: int, timeout: float) -> None:
        self._trampoline(raw, read=event == select.POLLIN, write=event == select.POLLOUT,
                         timeout=timeout, timeout_exc=TimeoutError)


class EventletWorker(GreenWorker):
    def patch(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Eventlet is deprecated": said in the module doc
            import eventlet
        # eventlet walks every live object to swap existing locks for green ones and prints a
        # traceback when an object refuses inspection (pydantic's internals do), though nothing
        # is wrong: keep that out of the error log unless debugging.
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            eventlet.monkey_patch()
        if captured.getvalue():
            log.debug("eventlet.monkey_patch() said: %s", captured.getvalue().strip())

    def sleep(self, seconds: float) -> None:
        import eventlet

        eventlet.sleep(seconds)

    def start_servers(self) -> None:
        import eventlet

        self.green_io = EventletIO()
        self.pool = eventlet.GreenPool(self.config.worker_connections)
        self.accepting = True
        self.acceptors = []
        for listener in self.listeners:
            sock = socket.socket(listener.sock.family, socket.SOCK_STREAM, fileno=listener.sock.fileno())
            self.acceptors.append((eventlet.spawn(self._accept_loop, sock, listener), sock))

    def _accept_loop(self, sock: socket.socket, listener: Listener) -> None:
        sock.settimeout(0.5)  # so the loop notices a stop
        while self.accepting:
            try:
                client, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                    continue
                if not self.accepting:
                    return
                raise
            client.setblocking(True)  # (accepted even as we stop: it is served, with close)
            self.pool.spawn_n(self._handle, client, peer, listener)

    def _handle(self, client: socket.socket, peer: Any, listener: Listener) -> None:
        self.handle(client, peer, listener)

    def stop_accepting(self) -> None:
        self.accepting = False

    def stop_servers(self) -> None:
        self.accepting = False
        for acceptor, sock in self.acceptors:
            acceptor.wait()
            sock.detach()

    def active(self) -> int:
        return int(self.pool.running())

    def kill_all(self) -> None:
        pass  # green threads end with the process
