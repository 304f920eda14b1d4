"""WSGI apps for the master tests (imported by the server under test, by module name ``apps``).

``hello`` answers every path with ``pid=<worker pid>`` (so tests can tell which worker served), and
has a few paths that misbehave on purpose:

* ``/slow?t=SECONDS&mark=PATH``: touch PATH (so the test knows the request is inside the app),
  then sleep.
* ``/hang``: sleep forever (the master's timeout must kill the worker).
* ``/spin``: loop forever without yielding (blocks a gevent/eventlet worker's hub).
* ``/alloc?mib=N``: keep N MiB more for the life of the process (memory recycling), up to a cap.
* POST: read the whole body and answer with its length too -- except ``POST /ignore``, which
  never reads it.
* ``/forbidden``: a 403 at once, without reading the body.

Apps whose code changes between reloads (or fails to import) are written by the tests themselves.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., object]

_KEPT: list[bytearray] = []
ALLOC_CAP_MIB = 160  # never keep more than this per process, whatever the test asks


def _query(environ: dict[str, object]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}


def hello(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = _query(environ)
    extra = ""
    if path == "/forbidden":  # answers at once, without reading a body (an early 403)
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"no.\n"]
    if environ["REQUEST_METHOD"] == "POST" and path != "/ignore":
        body = environ["wsgi.input"].read()  # type: ignore[attr-defined]
        extra = f" body={len(body)}"
    elif path == "/slow":
        mark = query.get("mark")
        if mark:
            with open(mark, "w"):
                pass
        time.sleep(float(query.get("t", "1")))
    elif path == "/hang":
        while True:
            time.sleep(3600)
    elif path == "/spin":  # never yields: blocks a green worker's hub
        while True:
            pass
    elif path == "/alloc":
        mib = int(query.get("mib", "4"))
        if len(_KEPT) < ALLOC_CAP_MIB:
            for _ in range(mib):
                chunk = bytearray(1 << 20)
                chunk[::4096] = b"x" * (1 << 8)  # touch every page so it counts as resident
                _KEPT.append(chunk)
    body = f"pid={os.getpid()}{extra}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def environ(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    """Every path: the environ's string values as JSON (what the server told the app)."""
    import json

    body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI twin of ``hello`` (the launcher serves it for ``-k asgi``): the same paths.
    ``/hang`` and ``/spin`` block the event loop, as a blocking call in an ``async def`` would:
    the heartbeat stops and the master's timeout must kill the worker."""
    if scope["type"] != "http":
        return  # lifespan: not supported, served without it
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    extra = ""
    if path == "/forbidden":
        await _asgi_text(send, b"no.\n", 403)
        return
    if scope["method"] == "POST" and path != "/ignore":
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        extra = f" body={size}"
    elif path == "/slow":
        mark = query.get("mark")
        if mark:
            with open(mark, "w"):
                pass
        await asyncio.sleep(float(query.get("t", "1")))
    elif path in ("/hang", "/spin"):
        while True:
            time.sleep(3600)  # blocks the loop
    elif path == "/alloc":
        mib = int(query.get("mib", "4"))
        if len(_KEPT) < ALLOC_CAP_MIB:
            for _ in range(mib):
                chunk = bytearray(1 << 20)
                chunk[::4096] = b"x" * (1 << 8)
                _KEPT.append(chunk)
    await _asgi_text(send, f"pid={os.getpid()}{extra}\n".encode())


async def _asgi_text(send: Any, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def asgi_environ(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI twin of ``environ`` (the launcher serves it for ``-k asgi``): the WSGI keys the
    tests read, from the scope."""
    import json

    if scope["type"] != "http":
        return
    client = scope["client"]
    body = json.dumps({"REMOTE_ADDR": client[0] if client else "",
                       "REMOTE_PORT": str(client[1]) if client else "0",
                       "wsgi.url_scheme": scope["scheme"], "PATH_INFO": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
