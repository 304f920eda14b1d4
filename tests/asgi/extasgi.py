"""ASGI apps for tests/asgi/test_extensions.py (imported by the server under test as
``extasgi``): ``http.response.pathsend``, response trailers, asgi_disconnect_grace_period.

``app`` paths (``?path=`` an absolute file path, ``?mark=`` a file the app writes to):

* ``/starlette/file?path=``: Starlette's ``FileResponse`` (it uses pathsend when the scope
  advertises it).
* ``/pathsend?path=[&length=1]``: a raw pathsend, with the app's own Content-Length when asked.
* ``/pathsend-relative``: pathsend of a relative path (an app error: 500).
* ``/extensions``: the scope's ``extensions`` as JSON.
* ``/rss``: the worker's resident set size in KiB.
* ``/trailers``: ``trailers: True``, two body messages, trailers in two messages.
* ``/trailers-one``: ``trailers: True``, one body message, one trailers message.
* ``/trailers-pathsend?path=``: ``trailers: True``, the body by pathsend, a trailer.
* ``/bad-trailer``: a trailer with an invalid name.
* anything else: 200 ``extasgi`` (the harness's readiness check).
* ``/grace?mark=``: streams until the client goes away, then keeps working (ignores the
  disconnect) and writes ``cancelled`` to mark when its task is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

Scope = dict[str, Any]


async def _file(request: Request) -> FileResponse:
    return FileResponse(request.query_params["path"])


starlette_app = Starlette(routes=[Route("/starlette/file", _file)])


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/starlette/"):
        await starlette_app(scope, receive, send)
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/pathsend":
        import os
        if "length" in query:
            start["headers"] = [(b"content-length", str(os.path.getsize(query["path"])).encode())]
        await send(start)
        await send({"type": "http.response.pathsend", "path": query["path"]})
    elif path == "/pathsend-relative":
        await send(start)
        await send({"type": "http.response.pathsend", "path": "relative/file"})
    elif path == "/extensions":
        await send(start)
        await send({"type": "http.response.body",
                    "body": json.dumps(scope.get("extensions")).encode()})
    elif path == "/rss":
        await send(start)
        await send({"type": "http.response.body", "body": str(_rss_kib()).encode()})
    elif path == "/trailers":
        await send({**start, "trailers": True})
        await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-more", b"1")]})
    elif path == "/trailers-one":
        await send({**start, "trailers": True})
        await send({"type": "http.response.body", "body": b"one"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
    elif path == "/trailers-pathsend":
        await send({**start, "trailers": True})
        await send({"type": "http.response.pathsend", "path": query["path"]})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"file")]})
    elif path == "/bad-trailer":
        await send({**start, "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        await send({"type": "http.response.trailers", "headers": [(b"bad name", b"v")]})
    elif path == "/grace":
        await send(start)
        began = 0.0
        try:
            while True:
                try:
                    await send({"type": "http.response.body", "body": b"x" * 1024,
                                "more_body": True})
                except OSError:
                    began = time.monotonic()
                    await asyncio.sleep(60)  # an app that takes long to clean up
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            with open(query["mark"], "w") as mark:
                mark.write(f"cancelled {time.monotonic() - began:.2f}")
            raise
    else:
        await send(start)
        await send({"type": "http.response.body", "body": b"extasgi"})
