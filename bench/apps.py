"""The benchmark's apps: one plain WSGI callable per scenario and its ASGI twin (for the
``asgi`` class: ours, uvicorn, granian, gunicorn ``-k asgi``), plus the WebSocket echoes; no
framework, no routing.

Each cell of the benchmark starts a server with exactly one of these callables, so the number
measured is the server's cost, not a router's.  They ignore the path: nginx forwards whatever wrk
asks for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

HELLO_BODY = b"Hello, world!\n"
# One MiB in 64 KiB chunks: a realistic shape for a large body (a template or a file read in
# pieces), and it makes the server's write path iterate rather than send one giant buffer.
ONE_MIB = 1 << 20
_CHUNK = b"x" * (64 << 10)
SLEEP_SECONDS = 0.050


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Hello world: the smallest response, so the server's per-request overhead dominates."""
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO_BODY)))])
    return [HELLO_BODY]


def sleep50(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """An I/O-bound view: 50 ms of waiting (a database or an HTTP API), then a tiny body.

    ``time.sleep`` is what gevent and eventlet monkey-patch, so the same app measures how well a
    worker class overlaps waits.  Ideal throughput is concurrency / 0.05 s.
    """
    time.sleep(SLEEP_SECONDS)
    body = b"slept 50 ms\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def onemeg(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """A 1 MiB response with a Content-Length, sent as 16 chunks of 64 KiB."""
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(ONE_MIB))])
    return [_CHUNK] * (ONE_MIB // len(_CHUNK))


def post_echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Read the whole request body and answer with its length in bytes.

    Reading to the end matters: a server must consume the body before it can reuse the
    connection, which is exactly the path the keep-alive POST scenario exercises.
    """
    stream = environ["wsgi.input"]
    # PEP 3333 leaves reading past CONTENT_LENGTH undefined, so honour it when it is given; a
    # chunked body has none and the server must then end the stream itself.
    length_text = environ.get("CONTENT_LENGTH") or ""
    remaining = int(length_text) if length_text.isdigit() else None
    total = 0
    while remaining is None or remaining > 0:
        chunk = stream.read(65536 if remaining is None else min(remaining, 65536))
        if not chunk:
            break
        total += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    body = f"{total}\n".encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# ---------------------------------------------------------------------------------------------
# ASGI twins of the scenarios above, for the ``asgi`` class.  Same bodies and headers; each
# answers the lifespan protocol (startup and shutdown complete at once), so every server runs
# with its default lifespan setting and none logs a lifespan failure.

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_HELLO_START = {"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(HELLO_BODY)).encode())]}
_HELLO_BODY_EVENT = {"type": "http.response.body", "body": HELLO_BODY}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def asgi_hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Hello world over ASGI: the server's per-request overhead."""
    if scope["type"] == "http":
        # Fresh dicts per request: a server may keep or mutate what it is sent.
        await send(dict(_HELLO_START))
        await send(dict(_HELLO_BODY_EVENT))
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)


async def asgi_sleep50(scope: Scope, receive: Receive, send: Send) -> None:
    """50 ms of awaiting, then a tiny body (ideal: concurrency / 0.05 s)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await asyncio.sleep(SLEEP_SECONDS)
    body = b"slept 50 ms\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def asgi_onemeg(scope: Scope, receive: Receive, send: Send) -> None:
    """1 MiB with a Content-Length in 16 body events of 64 KiB (``more_body``)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(ONE_MIB).encode())]})
    chunks = ONE_MIB // len(_CHUNK)
    for i in range(chunks):
        await send({"type": "http.response.body", "body": _CHUNK, "more_body": i < chunks - 1})


async def asgi_post_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the whole request body (``more_body``) and answer with its length."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    total = 0
    while True:
        event = await receive()
        if event["type"] != "http.request":
            return  # http.disconnect
        total += len(event.get("body", b""))
        if not event.get("more_body", False):
            break
    body = f"{total}\n".encode("ascii")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# WebSocket echo (bench/ws.py).  Any path; a request that is not an upgrade gets hello world, so
# the same readiness check through nginx works for every server.


def ws_echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Echo every message back through our native API, ``environ['wsgi.websocket']``."""
    ws = environ.get("wsgi.websocket")
    if ws is None:
        return hello(environ, start_response)
    while True:
        message = ws.receive()
        if message is None:  # closed by the client, or the connection dropped
            return []
        ws.send(message)


async def asgi_ws_echo(scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
    """The same echo as an ASGI app, for uvicorn, granian, gunicorn and ours ``-k asgi``."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(HELLO_BODY)).encode())]})
        await send({"type": "http.response.body", "body": HELLO_BODY})
        return
    if scope["type"] != "websocket":
        return
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        event = await receive()
        if event["type"] != "websocket.receive":
            return  # websocket.disconnect
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event["bytes"]})
