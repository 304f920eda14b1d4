"""The forwarded-header rule of :mod:`appserver.forwarded` for a ``tornado.web.Application``.

Tornado's own ``xheaders=True`` is not used: it believes X-Forwarded-For from every peer (no
allow list), lets an ``X-Real-Ip`` header replace the address and ``X-Scheme`` the scheme (a
client behind nginx can send both, and nginx passes them on), and cannot believe more than one
hop.  This delegate sits between Tornado's HTTPServer and the Application instead and sets the
connection context's ``remote_ip`` and ``protocol`` by the same rule as the WSGI environ, for
each request, restoring them when the request ends (a kept-alive connection serves several).
The scheme follows ``secure_scheme_headers``; when two of them disagree the request is answered
400 here and never reaches the Application.  ``forwarder_headers`` and ``header_map`` are about
the WSGI environ and do not apply: a Tornado handler reads the headers as they came.
Imported only by the tornado worker, so Tornado stays an optional dependency.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable
from typing import Any

from tornado import httputil

from .forwarded import ForwardedTrust, SchemeConflict

log = logging.getLogger("appserver.worker")


class ForwardedHeaders(httputil.HTTPServerConnectionDelegate):
    """Wraps the Application given to ``HTTPServer`` (which then runs with ``xheaders=False``)."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, trust: ForwardedTrust) -> None:
        self.app = app
        self.trust = trust

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        delegate = self.app.start_request(server_conn, request_conn)
        # The per-connection _HTTPRequestContext (what xheaders rewrites too); HTTP1Connection
        # has it, the HTTPConnection interface does not declare it.
        context = getattr(request_conn, "context")  # noqa: B009
        return _ForwardedRequest(delegate, context, self.trust, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)


class _ForwardedRequest(httputil.HTTPMessageDelegate):
    """One request: the context is rewritten before the Application builds its request object
    (in ``headers_received``) and restored afterwards."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, context: Any,
                 trust: ForwardedTrust, request_conn: httputil.HTTPConnection) -> None:
        self.delegate = delegate
        self.context = context
        self.trust = trust
        self.request_conn = request_conn
        self.rejected = False  # answered 400 here: the Application never hears of it
        self.saved: tuple[str, str] = (context.remote_ip, context.protocol)

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        try:
            self._apply(headers)
        except SchemeConflict as exc:
            self._reject(str(exc))
            return None
        return self.delegate.headers_received(start_line, headers)

    def _reject(self, detail: str) -> None:
        """A 400 with Connection: close; Tornado then closes without reading a body."""
        self.rejected = True
        log.info("bad request from %s: %s", self.context.remote_ip, detail)
        body = f"400 Bad Request: {detail}\n".encode()
        self.request_conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 400, "Bad Request"),
            httputil.HTTPHeaders({"Content-Type": "text/plain; charset=utf-8",
                                  "Content-Length": str(len(body)), "Connection": "close"}),
            body)
        self.request_conn.finish()

    def _apply(self, headers: httputil.HTTPHeaders) -> None:
        context = self.context
        is_unix = getattr(context, "address_family", None) == socket.AF_UNIX
        if not self.trust.allows(context.remote_ip, is_unix):
            return
        forwarded_for = headers.get_list("X-Forwarded-For")
        client = self.trust.client(",".join(forwarded_for)) if forwarded_for else None
        if client is not None:
            context.remote_ip = client
        lines = [(name, value) for name in self.trust.scheme_headers
                 for value in headers.get_list(name)]
        scheme = self.trust.scheme_of(lines) if lines else None  # may raise SchemeConflict
        if scheme is not None:
            context.protocol = scheme

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.rejected:
            return None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        if not self.rejected:
            self.delegate.finish()
        self._restore()

    def on_connection_close(self) -> None:
        if not self.rejected:
            self.delegate.on_connection_close()
        self._restore()

    def _restore(self) -> None:
        self.context.remote_ip, self.context.protocol = self.saved
