"""Apps for the metrics tests: a WSGI app and its ASGI twin with the same paths.

``/`` 200, ``/missing`` 404, ``/boom`` raises (the server answers 500), ``/slow?t=S`` sleeps,
``/hang`` never returns (the master's timeout kills the worker), POST reads the body, ``/ws``
echoes WebSocket messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/ws":  # the server's native WebSocket API: echo
        ws = environ["wsgi.websocket"]
        while (message := ws.receive()) is not None:
            ws.send(message)
        return []
    if path == "/boom":
        raise RuntimeError("boom (a test)")
    if path == "/hang":
        while True:
            time.sleep(3600)
    if path == "/slow":
        time.sleep(float(parse_qs(environ["QUERY_STRING"]).get("t", ["1"])[0]))
    size = len(environ["wsgi.input"].read()) if environ["REQUEST_METHOD"] == "POST" else 0
    status = "404 Not Found" if path == "/missing" else "200 OK"
    body = f"{path} {size}\n".encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":  # echo
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": message.get("text"),
                            "bytes": message.get("bytes")})
            else:
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("boom (a test)")
    if path == "/hang":
        while True:
            time.sleep(3600)  # blocks the loop: the heartbeat stops
    if path == "/slow":
        t = parse_qs(scope["query_string"].decode()).get("t", ["1"])[0]
        await asyncio.sleep(float(t))
    size = 0
    while scope["method"] == "POST":
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = f"{path} {size}\n".encode()
    await send({"type": "http.response.start", "status": 404 if path == "/missing" else 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def aiohttp_app() -> Any:
    """For -k aiohttp: the same / and /missing paths as an aiohttp.web.Application."""
    from aiohttp import web  # noqa: PLC0415 - only under -k aiohttp

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        status = 404 if request.path == "/missing" else 200
        return web.Response(text=f"{request.path} {len(body)}\n", status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
