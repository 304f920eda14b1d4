"""``GET /metrics`` on the master's own listener (``--metrics-bind``), from a daemon thread.

Design notes
------------
Why a thread and not the master's select loop: a scrape renders a few kilobytes, but a client
that connects and stalls would hold a loop that must react to signals and heartbeats within a
second; here each connection gets its own short-lived thread with a 5 s socket timeout, and the
master's loop is untouched.  The threads only read (see :mod:`.master`).  ``socketserver``
serves the socket the master bound (TCP or unix; :func:`appserver.sockets.bind_all` checks a
stale socket file and sets its mode), so nothing here binds.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sockets import Listener
    from .master import MasterMetrics

log = logging.getLogger("appserver.master")


class ThreadedServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A socketserver over an already listening socket, stopped by :meth:`close`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, listener: Listener, handler: type[socketserver.BaseRequestHandler],
                 metrics: MasterMetrics) -> None:
        super().__init__(("", 0), handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener.sock
        self.address_family = listener.sock.family
        self.listener = listener
        self.metrics = metrics
        self._thread = threading.Thread(target=self.serve_forever, args=(0.5,), daemon=True,
                                        name=f"appserver-{handler.__name__}")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self._thread.join(2.0)
        self.listener.close(unlink=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: a request failed", self.listener, exc_info=True)


class MetricsHandler(BaseHTTPRequestHandler):
    timeout = 5
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path != "/metrics":
            self._reply(404, b"not found: the metrics are at /metrics\n", "text/plain")
            return
        from .collector import exposition  # noqa: PLC0415 - prometheus_client, when scraped

        body, content_type = exposition(self.server.metrics, self.headers.get("Accept", ""))
        self._reply(200, body, content_type)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # a scrape every few seconds is not worth a log line


class MetricsServer(ThreadedServer):
    def __init__(self, listener: Listener, metrics: MasterMetrics) -> None:
        super().__init__(listener, MetricsHandler, metrics)
