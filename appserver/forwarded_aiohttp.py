"""The forwarded-header rule of :mod:`appserver.forwarded` for an ``aiohttp.web.Application``.

aiohttp itself never reads X-Forwarded-* (``request.remote`` is the peer; aiohttp-remotes is
the usual add-on).  This middleware, put first (outermost) in the Application's chain by the
aiohttp worker, applies the WSGI environ's rule: only a peer in ``forwarded_allow_ips`` (a unix
socket peer by its own rule) is believed, the X-Forwarded-For entry ``forwarded_hops`` from the
right becomes ``request.remote``, the scheme follows ``secure_scheme_headers``, and scheme
headers that disagree are a 400 that never reaches the app.  The handler and every inner
middleware get ``request.clone(remote=..., scheme=...)``; the believed address is also kept in
the original request (``REMOTE_KEY``) for the access log, which aiohttp hands the original.
``forwarder_headers`` and ``header_map`` are about the WSGI environ and do not apply: an aiohttp
handler reads the headers as they came.  Imported only by the aiohttp worker.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from .forwarded import ForwardedTrust, SchemeConflict

log = logging.getLogger("appserver.worker")

REMOTE_KEY = "appserver.remote"  # the believed client address, in the original request
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_unix_peer(request: web.BaseRequest) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def forwarded_middleware(trust: ForwardedTrust) -> Middleware:
    """The middleware applying ``trust`` to each request."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        if not trust.allows(peer, is_unix_peer(request)):
            return await handler(request)
        headers = request.headers
        forwarded_for = headers.getall("X-Forwarded-For", [])
        client = trust.client(",".join(forwarded_for)) if forwarded_for else None
        lines = [(name, value) for name in trust.scheme_headers
                 for value in headers.getall(name, [])]
        try:
            scheme = trust.scheme_of(lines) if lines else None
        except SchemeConflict as exc:
            log.info("bad request from %s: %s", peer, exc)
            raise web.HTTPBadRequest(text=f"400 Bad Request: {exc}\n",
                                     headers={"Connection": "close"}) from None
        changes: dict[str, Any] = {}
        if client is not None:
            changes["remote"] = client
            request[REMOTE_KEY] = client
        if scheme is not None:
            changes["scheme"] = scheme
        if not changes:
            return await handler(request)
        clone = request.clone(**changes)
        assert isinstance(clone, web.Request)
        return await handler(clone)

    return forwarded
