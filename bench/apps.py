"""The benchmark's apps: one plain WSGI callable per scenario (and one ASGI app for uvicorn
in the WebSocket benchmark), no framework, no routing.

Each cell of the benchmark starts a server with exactly one of these callables, so the number
measured is the server's cost, not a router's.  They ignore the path: nginx forwards whatever wrk
asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
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
    """The same echo as an ASGI app, for uvicorn (run with ``--lifespan off``)."""
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
