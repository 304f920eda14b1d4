"""The sample app's ASGI twin, written with Starlette: the pages of :mod:`sample_app.app` and the
chat of :mod:`sample_app.chat`, served by ``settings.asgi.toml`` (``app.interface = "asgi"``).

Endpoints (the same paths, statuses and bodies as the WSGI app):

- ``GET /``            HTML home page: the client address and scheme the app sees, links, a form
- ``GET /api/info``    JSON: what the server put in the scope (client, scheme, ...)
- ``POST /api/echo``   JSON: the posted JSON document, echoed back (400 when it is not JSON)
- ``POST /upload``     multipart/form-data: name, size and sha256 of each uploaded file (JSON)
- ``GET /stream``      a chunked, unbuffered text stream (``?lines=N&delay=S``), an async generator
- ``GET /healthz``     200 "ok": used by the compose health checks
- ``GET /chat``        the chat page; its JavaScript talks over a WebSocket to ``/ws/chat``
- ``WS /ws/chat``      the chat, on ASGI's ``websocket`` scope (Starlette's ``WebSocket``)
- ``/static/...``      served by nginx from ``sample_app/static``; the app itself answers 404

``scope["client"]`` and ``scope["scheme"]`` are what the server set: behind nginx it takes them
from X-Forwarded-For/-Proto, because a unix-socket peer is trusted.  Every response carries
``X-Served-By: sample_app`` (a small ASGI middleware adds it) so a test can tell the app's
answers from nginx's.

Design notes
------------
* Only Starlette is needed at run time (``pip install 'appserver[asgi]'``): uploads are parsed
  by the WSGI app's own multipart parser from the body, so python-multipart is not.
* The chat room is an :mod:`appserver.broadcast` room, as in the WSGI chat, on its async API:
  each WebSocket publishes with ``publish_async`` and a task relays its ``subscribe_async``
  subscription (a bounded queue: a client that falls behind is closed with 1013, and delays no
  one else).  With APPSERVER_REDIS_URL set the room spans every worker and replica (and the
  WSGI chat's, which uses the same room); without it, one worker's clients only
  (settings.asgi.toml runs one worker, without Redis).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from appserver.broadcast import OVERFLOW, AsyncSubscription, Broadcast, PublishError
from sample_app.app import (
    MAX_BODY,
    STREAM_MAX_DELAY,
    STREAM_MAX_LINES,
    HTTPError,
    home_html,
    upload_summary,
)
from sample_app.chat import LOST, RESTORED, ROOM, SOCKET_PATH, chat_html, parse_message

SERVED_BY = (b"x-served-by", b"sample_app")
NO_STORE = {"Cache-Control": "no-store"}


def client_view(request: Request) -> dict[str, Any]:
    """What the app knows about the request, as the server presented it (the WSGI app's keys)."""
    scope = request.scope
    asgi = scope.get("asgi", {})
    return {
        "remote_addr": request.client.host if request.client else "",
        "scheme": request.url.scheme,
        "host": request.headers.get("host", ""),
        "method": request.method,
        "path": scope.get("path", ""),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "server_software": f"ASGI {asgi.get('version', '2.0')} (spec {asgi.get('spec_version', '2.0')})",
        "forwarded_for": request.headers.get("x-forwarded-for"),
        "forwarded_proto": request.headers.get("x-forwarded-proto"),
        "pid": os.getpid(),
    }


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
    return Response(body, status, media_type="application/json")


async def read_body(request: Request) -> bytes:
    """The request body as it streams in, refused past MAX_BODY (Content-Length or counted)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise HTTPError("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise HTTPError("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
    return bytes(data)


# ---- pages ---------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    return HTMLResponse(home_html(client_view(request)))


async def api_info(request: Request) -> Response:
    return _json(client_view(request))


async def api_echo(request: Request) -> Response:
    body = await read_body(request)
    try:
        document = json.loads(body or b"null")
    except ValueError as exc:
        raise HTTPError("400 Bad Request", f"not JSON: {exc}") from None
    return _json({"echo": document, "client": client_view(request)})


async def upload(request: Request) -> Response:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPError("415 Unsupported Media Type", "send multipart/form-data")
    return _json(upload_summary(await read_body(request), content_type))


async def stream(request: Request) -> Response:
    query = request.query_params
    try:
        lines = min(int(query.get("lines", "5")), STREAM_MAX_LINES)
        delay = min(float(query.get("delay", "0.1")), STREAM_MAX_DELAY)
    except ValueError:
        raise HTTPError("400 Bad Request", "lines must be an integer and delay a number") from None

    async def generate() -> AsyncIterator[bytes]:
        for i in range(max(lines, 0)):
            if i and delay > 0:
                await asyncio.sleep(delay)  # the loop serves other requests meanwhile
            yield f"line {i + 1} of {lines} at {time.time():.3f}\n".encode()

    # No Content-Length: the server sends it chunked.  X-Accel-Buffering tells nginx to pass
    # each chunk on as it comes instead of buffering the whole response.
    return StreamingResponse(generate(), media_type="text/plain",
                             headers={**NO_STORE, "X-Accel-Buffering": "no"})


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n", headers=NO_STORE)


async def chat_page(request: Request) -> Response:
    return HTMLResponse(chat_html(), headers=NO_STORE)


async def chat_plain_get(request: Request) -> Response:
    """``/ws/chat`` without an Upgrade (or through a proxy that dropped it): 400, as RFC 6455
    §4.2.1 has it for a bad handshake."""
    raise HTTPError("400 Bad Request", "this is a WebSocket endpoint: connect with new WebSocket(...)")


# ---- the chat ------------------------------------------------------------------------------


# Redis when APPSERVER_REDIS_URL is set, in-process otherwise; connects on first use, in the worker.
BROADCAST = Broadcast.from_environ(prefix="sample_app:chat:")  # the WSGI chat's prefix and room
_guests = itertools.count(1)


async def relay(sub: AsyncSubscription, ws: WebSocket) -> None:
    """The room's messages to one client, until either ends (a task beside the handler)."""
    try:
        async for event in sub:
            if event.type == "message":
                await ws.send_text(event.data)
            else:
                await ws.send_text(json.dumps({"type": "system", "event": event.type,
                                               "text": LOST if event.type == "lost" else RESTORED}))
        if sub.close_code == OVERFLOW:
            await ws.close(OVERFLOW, "too slow: messages piled up")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away (or is closing); the handler notices and leaves
    finally:
        sub.close()


async def chat_socket(ws: WebSocket, broadcast: Broadcast | None = None) -> None:
    """``/ws/chat``: join the room, publish each message, relay the room's, leave when closed."""
    broadcast = BROADCAST if broadcast is None else broadcast
    await ws.accept()
    worker = os.getpid()
    guest = f"guest-{worker}-{next(_guests)}"
    sub = broadcast.subscribe_async(ROOM)
    task: asyncio.Task[None] | None = None

    async def publish(event: dict[str, Any]) -> None:
        try:
            await broadcast.publish_async(ROOM, json.dumps(event))
        except PublishError as exc:  # not delivered to anyone: its sender hears so
            await ws.send_text(json.dumps({"type": "error", "text": f"not delivered: {exc}"}))

    try:
        # Only the new client learns its guest name and which worker it reached.
        await ws.send_text(json.dumps({"type": "welcome", "name": guest, "worker": worker,
                                       "room": broadcast.backend.name,
                                       "clients": broadcast.subscribers(ROOM)}))
        task = asyncio.create_task(relay(sub, ws))
        await publish({"type": "presence", "event": "join", "name": guest, "worker": worker})
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":  # the client, or the server's close
                break
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                name, text = parse_message(raw, guest)
            except ValueError as exc:
                await ws.send_text(json.dumps({"type": "error", "text": str(exc)}))
                continue
            await publish({"type": "message", "name": name, "text": text, "worker": worker})
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # this client went away while we wrote to it: nothing to report
    finally:
        sub.close()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await broadcast.publish_async(ROOM, json.dumps({"type": "presence", "event": "leave",
                                                            "name": guest, "worker": worker}))
        except PublishError:
            pass  # nobody to tell: its client is gone, and the room is unreachable


# ---- the app -------------------------------------------------------------------------------


class ServedBy:
    """ASGI middleware: ``X-Served-By: sample_app`` on every HTTP response of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_served_by(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), SERVED_BY]}
            await send(message)

        await self.app(scope, receive, send_served_by)


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return PlainTextResponse(exc.message + "\n", int(exc.status.split()[0]),
                             headers=dict(exc.headers))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 (with its Allow header), worded as the WSGI app words them."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        text = f"no page at {request.url.path}"
    elif exc.status_code == 405:
        text = f"{request.method} not allowed here"
    else:
        text = str(exc.detail)
    return PlainTextResponse(text + "\n", exc.status_code, headers=exc.headers)


app = Starlette(
    routes=[
        Route("/", home),
        Route("/api/info", api_info),
        Route("/api/echo", api_echo, methods=["POST"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        Route("/healthz", healthz),
        Route("/chat", chat_page),
        Route(SOCKET_PATH, chat_plain_get),
        WebSocketRoute(SOCKET_PATH, chat_socket),
    ],
    middleware=[Middleware(ServedBy)],
    exception_handlers={HTTPError: _app_error, HTTPException: _http_error},
)
