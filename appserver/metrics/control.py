"""The control socket: one command per connection, one JSON line back.

Commands: ``status`` (see :mod:`.status`), and the actions ``reload``, ``add-worker``,
``remove-worker`` and ``stop`` (graceful), which queue the signal they stand for (HUP, TTIN,
TTOU, TERM) in the arbiter's signal queue and wake its loop, so that an action and its signal
behave identically.  The socket is a unix socket of mode ``control_socket_mode`` (0600: only
the master's user may connect), served from a daemon thread (see :mod:`.listener`).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import socketserver
from typing import TYPE_CHECKING, Any

from .listener import ThreadedServer
from .status import status_data

if TYPE_CHECKING:
    from ..sockets import Listener
    from .master import MasterMetrics

log = logging.getLogger("appserver.master")

ACTIONS = {"reload": signal.SIGHUP, "add-worker": signal.SIGTTIN,
           "remove-worker": signal.SIGTTOU, "stop": signal.SIGTERM}
COMMANDS = ("status", *ACTIONS)


class ControlHandler(socketserver.StreamRequestHandler):
    timeout = 5
    server: ControlServer

    def handle(self) -> None:
        try:
            command = self.rfile.readline(256).decode("ascii", "replace").strip()
        except OSError:
            return
        reply = self.server.answer(command)
        try:
            self.wfile.write(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass


class ControlServer(ThreadedServer):
    def __init__(self, listener: Listener, metrics: MasterMetrics) -> None:
        super().__init__(listener, ControlHandler, metrics)

    def answer(self, command: str) -> dict[str, Any]:
        if command == "status":
            return {"ok": True, **status_data(self.metrics)}
        sig = ACTIONS.get(command)
        if sig is None:
            return {"ok": False, "error": f"unknown command {command!r}; one of "
                                          f"{', '.join(COMMANDS)}"}
        arbiter = self.metrics.arbiter
        log.info("control socket: %s (as %s)", command, sig.name)
        arbiter.queue_signal(sig)
        return {"ok": True, "action": command, "signal": sig.name}


def ask(path: str, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send ``command`` to the control socket at ``path``; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    reply: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    return reply

