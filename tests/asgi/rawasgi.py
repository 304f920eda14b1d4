"""Plain ASGI 3.0 apps for tests/asgi (imported by the server under test as ``rawasgi``).

``app`` paths:

* ``/`` (and anything not below): ``hello``.
* ``/scope``: the scope's fields as JSON (bytes as latin-1 text), ``state`` included.
* ``/echo``: the request body read message by message; answers the sizes of the
  ``http.request`` messages and the body's SHA-256, streamed back in two pieces.
* ``/stream?n=N&mark=PATH``: N chunks (no Content-Length: chunked), 10 ms apart; when the client
  goes away, what the app saw (``disconnect`` from receive(), ``oserror`` from send()) is written
  to PATH.
* ``/raise``: raises before the response; ``/raise-late``: after the head and a first chunk.
* ``/nothing``: returns without a response.
* ``/length``: a Content-Length response sent in two messages.

``failing``: lifespan startup fails with a message; ``nolifespan``: raises on the lifespan
scope (auto mode: served without it).  ``wsgi_app``: a WSGI callable, refused under -k asgi.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]


async def _lifespan(scope: Scope, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["pid"] = os.getpid()
            scope["state"]["started"] = "yes"
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            path = os.environ.get("ASGI_SHUTDOWN_MARK")
            if path:
                with open(path, "a") as fh:
                    fh.write(f"shutdown {os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Any, status: int, body: bytes,
                   ctype: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    assert scope["type"] == "http"
    path = scope["path"].removeprefix(scope["root_path"])  # the route, as Starlette finds it
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if path == "/scope":
        body = json.dumps(_text(dict(scope))).encode()
        await _respond(send, 200, body, b"application/json")
    elif path == "/echo":
        sizes = []
        digest = hashlib.sha256()
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            sizes.append(len(message["body"]))
            digest.update(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        out = json.dumps({"messages": len(sizes), "total": sum(sizes), "max": max(sizes),
                          "sha256": digest.hexdigest()}).encode()
        await send({"type": "http.response.body", "body": out[:5], "more_body": True})
        await send({"type": "http.response.body", "body": out[5:]})
    elif path == "/stream":
        await _stream(scope, receive, send, int(query.get("n", "10")), query.get("mark"))
    elif path == "/raise":
        raise RuntimeError("boom before the response")
    elif path == "/raise-late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after the head")
    elif path == "/nothing":
        return
    elif path == "/length":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"01234", "more_body": True})
        await send({"type": "http.response.body", "body": b"56789"})
    else:
        await _respond(send, 200, b"hello")


async def _stream(scope: Scope, receive: Any, send: Any, count: int, mark: str | None) -> None:
    seen: list[str] = []

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append("disconnect")
                return

    watcher = asyncio.create_task(watch())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    try:
        for i in range(count):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i,
                        "more_body": True})
            await asyncio.sleep(0.01)
            if seen:
                break
        else:
            await send({"type": "http.response.body", "body": b""})
    except OSError:
        seen.append("oserror")
    finally:
        await asyncio.sleep(0.05)
        watcher.cancel()
        if mark and seen:
            with open(mark, "w") as fh:
                fh.write(",".join(seen))


async def failing(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _respond(send, 200, b"never")


async def nolifespan(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']}")
    await _respond(send, 200, json.dumps({"state": "state" in scope}).encode())


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]
