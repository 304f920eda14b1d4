"""The ``tornado`` worker: Tornado's IOLoop, for WSGI apps and for ``tornado.web.Application``.

Since Tornado 5 the IOLoop *is* the asyncio loop, so a WSGI app is served exactly as by the
asyncio worker (the same parser, pool and WebSocket bridge), with ``IOLoop.current()`` available
to code that wants it.  A ``tornado.web.Application`` given as the app is served by Tornado's own
HTTPServer on the inherited sockets, with the server's limits, keep-alive, heartbeat, access log
and graceful stop.  Needs ``pip install 'appserver[tornado]'``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .aio import AsyncioWorker
from .base import log


class TornadoWorker(AsyncioWorker):
    def serve(self) -> None:
        import tornado.web

        if isinstance(self.app, tornado.web.Application):
            self._serve_tornado_app(self.app)
        else:
            super().serve()

    def unsupported_for(self, app: Any) -> str:
        import tornado.web

        if isinstance(app, tornado.web.Application) and self.config.proxy_protocol != "off":
            return ("--proxy-protocol does not apply to a tornado.web.Application (Tornado's own "
                    "HTTP server reads its connections); serve a WSGI app, or take the PROXY "
                    "header off in front")
        return ""

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        loop = super()._new_loop()
        # The current loop: Tornado's IOLoop.current() wraps it on first use (by the app or by
        # Tornado's HTTPServer).
        asyncio.set_event_loop(loop)
        return loop

    def _serve_tornado_app(self, app: Any) -> None:
        from tornado.httpserver import HTTPServer

        from ..forwarded import ForwardedTrust
        from ..forwarded_tornado import ForwardedHeaders

        config = self.config
        self.loop = self._new_loop()
        self._started: dict[int, float] = {}
        self.pool_size = 1
        app.settings["log_function"] = self._log_request
        # Not Tornado's xheaders (every peer, X-Real-Ip, one hop only): the WSGI environ's rule,
        # per peer and hop (appserver.forwarded).
        trust = ForwardedTrust(config.forwarded_allow_ips, config.forwarded_hops,
                               config.secure_scheme_headers)
        server = HTTPServer(
            ForwardedHeaders(app, trust), xheaders=False,
            idle_connection_timeout=config.keep_alive or None,
            no_keep_alive=config.keep_alive == 0, max_header_size=config.max_field_size *
            min(config.max_fields, 64), max_body_size=config.limit_request_body or None,
            body_timeout=config.header_timeout, ssl_options=self.state.tls)
        for listener in self.listeners:
            listener.sock.setblocking(False)
        server.add_sockets([listener.sock for listener in self.listeners])
        try:
            self.loop.run_until_complete(self._tornado_main(server))
        finally:
            self.loop.close()

    async def _tornado_main(self, server: Any) -> None:
        while self.alive:
            self.tick()
            await asyncio.sleep(0.25)
        self.state.stopping = True
        server.stop()  # stop accepting
        deadline = time.monotonic() + self.config.graceful_timeout
        try:
            await asyncio.wait_for(server.close_all_connections(),
                                   max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("worker %d: connections still open after the graceful timeout (%ds)",
                        self.pid, self.config.graceful_timeout)

    def _log_request(self, handler: Any) -> None:
        request = handler.request
        environ = {
            "REMOTE_ADDR": request.remote_ip, "REQUEST_METHOD": request.method,
            "RAW_URI": request.uri, "PATH_INFO": request.path, "QUERY_STRING": request.query,
            "SERVER_PROTOCOL": request.version,
            "HTTP_USER_AGENT": request.headers.get("User-Agent", "-"),
            "HTTP_REFERER": request.headers.get("Referer", "-"),
            "CONTENT_LENGTH": request.headers.get("Content-Length", ""),
        }
        status = f"{handler.get_status()} {handler._reason}"
        length = int(handler._headers.get("Content-Length", 0) or 0)
        self.state.count_request()
        self.state.access_log.log(environ, status, list(handler._headers.get_all()), length,
                                  request.request_time())
