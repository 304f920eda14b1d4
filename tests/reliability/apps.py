"""WSGI apps for the reliability suite (loaded by the server under test as
``tests.reliability.apps:NAME``, with the repository as the app directory).

``checksum`` answers a GET with ``ok <worker pid>`` and a POST with ``<sha256> <length> <worker
pid>`` of the body it read, so the client can tell a truncated or altered body from a whole one.
``?ms=N`` makes the request take N more milliseconds (at most 2 s) inside the app, so requests
are in flight when a worker is signalled or killed.

When the worker's environment names a directory in ``RELIABILITY_RECORD_DIR`` (``server.raw_env``),
the app keeps a record there, one file per worker (``requests-<pid>.log``): ``begin <id>`` when a
request carrying ``X-Request-Id`` enters the app, and ``body <sha256> <length>`` for every whole
body, written *before* the answer.  After a run, a body recorded twice was delivered twice, one
never recorded never reached the app whole, and a request that failed can be traced to the worker
that had it.

``asgi_checksum`` is its ASGI twin (``-k asgi``): the same answers and record, the body read with
``receive()``, the delay an ``asyncio.sleep``.  :func:`lifespan` is the lifespan protocol every
ASGI twin of the suite speaks (startup and shutdown complete at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., object]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

RECORD_ENV = "RELIABILITY_RECORD_DIR"
MAX_DELAY_MS = 2000

_record_fd: dict[int, int] = {}  # pid -> descriptor of that process's record file (fork-safe)


def _record(line: str) -> None:
    directory = os.environ.get(RECORD_ENV)
    if not directory:
        return
    pid = os.getpid()
    fd = _record_fd.get(pid)
    if fd is None:
        fd = os.open(os.path.join(directory, f"requests-{pid}.log"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _record_fd[pid] = fd
    os.write(fd, line.encode())  # one short O_APPEND write: never interleaved with another


def checksum(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    query = {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}
    delay = min(int(query.get("ms", "0") or 0), MAX_DELAY_MS)
    pid = os.getpid()
    request_id = str(environ.get("HTTP_X_REQUEST_ID", ""))
    if re.fullmatch(r"[\w.-]{1,64}", request_id):
        _record(f"begin {request_id}\n")
    if environ["REQUEST_METHOD"] == "POST":
        body = environ["wsgi.input"].read()  # type: ignore[attr-defined]
        digest = hashlib.sha256(body).hexdigest()
        expected = int(str(environ.get("CONTENT_LENGTH") or -1))
        if len(body) == expected:
            _record(f"body {digest} {len(body)}\n")
        answer = f"{digest} {len(body)} {pid}\n"
    else:
        answer = f"ok {pid}\n"
    if delay:
        time.sleep(delay / 1000)
    data = answer.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


async def lifespan(receive: Receive, send: Send) -> None:
    """The lifespan scope of an ASGI twin: startup and shutdown complete at once."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Receive) -> bytes:
    """The whole request body; a disconnect before its end raises ``ConnectionError``."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client went away before the end of the body")
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def asgi_checksum(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    assert scope["type"] == "http", scope["type"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    delay = min(int(query.get("ms", "0") or 0), MAX_DELAY_MS)
    pid = os.getpid()
    headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
    request_id = headers.get(b"x-request-id", "")
    if re.fullmatch(r"[\w.-]{1,64}", request_id):
        _record(f"begin {request_id}\n")
    if scope["method"] == "POST":
        body = await read_body(receive)
        digest = hashlib.sha256(body).hexdigest()
        expected = int(headers.get(b"content-length") or -1)
        if len(body) == expected:
            _record(f"body {digest} {len(body)}\n")
        answer = f"{digest} {len(body)} {pid}\n"
    else:
        answer = f"ok {pid}\n"
    if delay:
        await asyncio.sleep(delay / 1000)
    data = answer.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
