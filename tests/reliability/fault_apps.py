"""Misbehaving WSGI apps for the app-fault table (imported by the server under test as
``fault_apps``, from ``PYTHONPATH``).

``app`` answers ``/`` with ``ok pid=<worker pid>`` and misbehaves on purpose on these paths:

* ``/raise-before``: raises before calling start_response.
* ``/raise-after``: calls start_response, then raises (no byte has been sent yet).
* ``/raise-in-body-first``: returns an iterator that raises before its first chunk.
* ``/raise-in-body-chunked``: no Content-Length; yields a chunk, then raises (the head and a
  chunk are on the wire: only cutting the connection tells the client it is incomplete).
* ``/raise-in-body-length``: announces Content-Length 1000, yields 10 bytes, then raises.
* ``/hang``: blocks forever.  On gevent/eventlet with the *unpatched* ``time.sleep`` (a blocking
  C call, as a driver that is not green-aware makes), which stops the hub; elsewhere with a
  plain sleep in the request's thread.
* ``/leak?mib=N``: keeps N MiB more for the life of the process (every page touched), capped.
* ``/exit?status=N``: ``os._exit(N)`` in the middle of the request.

``asgi_startup_fails`` is an ASGI app whose lifespan startup fails (``lifespan.startup.failed``),
for the environment table.

``asgi_app`` is its ASGI twin (``-k asgi``), with the same routes, answers and faults:
``http.response.start`` stands for start_response and ``http.response.body`` messages with
``more_body`` for the body iterator (the server writes the head with the first body message, so
raising after the start is still "before any byte").  ``/hang`` is a blocking ``time.sleep`` in
the coroutine -- the nearest ASGI fault to a hung app thread: it stops the event loop, its
heartbeat with it (an ``await asyncio.sleep`` forever would hang only its own request, which the
worker's timeout rightly does not treat as a stuck worker).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., object]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

LEAK_CAP_MIB = 400  # never keep more than this per process, whatever the test asks
_LEAKED: list[bytearray] = []


class Fault(RuntimeError):
    """What the apps raise: the log must show it."""


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}


def _blocking_sleep() -> Callable[[float], None]:
    """``time.sleep`` as it was before a green worker monkey-patched it."""
    if "gevent" in sys.modules:
        from gevent import monkey  # noqa: PLC0415

        if monkey.is_module_patched("time"):
            return monkey.get_original("time", "sleep")  # type: ignore[no-any-return]
    if "eventlet" in sys.modules:
        from eventlet import patcher  # noqa: PLC0415

        if patcher.is_monkey_patched("time"):
            return patcher.original("time").sleep  # type: ignore[no-any-return]
    return time.sleep


def _ok(start_response: StartResponse, text: str) -> list[bytes]:
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _body_raising(first: bytes | None, message: str) -> Iterator[bytes]:
    if first is not None:
        yield first
    raise Fault(message)


def _leak(mib: int) -> str:
    for _ in range(mib):
        if len(_LEAKED) >= LEAK_CAP_MIB:
            break
        chunk = bytearray(1 << 20)
        chunk[::4096] = b"x" * 256  # touch every page so it counts as resident
        _LEAKED.append(chunk)
    return f"leaked pid={os.getpid()} total={len(_LEAKED)}MiB\n"


def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
    path = environ["PATH_INFO"]
    query = _query(environ)
    if path == "/raise-before":
        raise Fault("fault: raised before start_response")
    if path == "/raise-after":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise Fault("fault: raised after start_response")
    if path == "/raise-in-body-first":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _body_raising(None, "fault: raised in the body iterator before its first chunk")
    if path == "/raise-in-body-chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _body_raising(b"partial body\n", "fault: raised in the body iterator after a chunk")
    if path == "/raise-in-body-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")])
        return _body_raising(b"0123456789", "fault: raised in the body iterator short of "
                             "Content-Length")
    if path == "/hang":
        sleep = _blocking_sleep()
        while True:
            sleep(3600)
    if path == "/leak":
        return _ok(start_response, _leak(int(query.get("mib", "16"))))
    if path == "/exit":
        os._exit(int(query.get("status", "3")))
    return _ok(start_response, f"ok pid={os.getpid()}\n")


# ---- the ASGI twin ----------------------------------------------------------------------------


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _start(send: Send, length: int | None = None) -> None:
    headers = [(b"content-type", b"text/plain")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def _asgi_ok(send: Send, text: str) -> None:
    body = text.encode()
    await _start(send, len(body))
    await send({"type": "http.response.body", "body": body})


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    if path == "/raise-before":
        raise Fault("fault: raised before start_response")
    if path == "/raise-after":
        await _start(send)
        raise Fault("fault: raised after start_response")
    if path == "/raise-in-body-first":
        await _start(send)
        await asyncio.sleep(0)  # the body "iterator" runs, and fails before its first chunk
        raise Fault("fault: raised in the body iterator before its first chunk")
    if path == "/raise-in-body-chunked":
        await _start(send)
        await send({"type": "http.response.body", "body": b"partial body\n", "more_body": True})
        raise Fault("fault: raised in the body iterator after a chunk")
    if path == "/raise-in-body-length":
        await _start(send, 1000)
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        raise Fault("fault: raised in the body iterator short of Content-Length")
    if path == "/hang":
        while True:
            time.sleep(3600)  # blocking, on purpose: the event loop stops
    if path == "/leak":
        return await _asgi_ok(send, _leak(int(query.get("mib", "16"))))
    if path == "/exit":
        os._exit(int(query.get("status", "3")))
    await _asgi_ok(send, f"ok pid={os.getpid()}\n")


STARTUP_FAILURE = "fault: the database at db:5432 refused the connection"


async def asgi_startup_fails(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """An ASGI app whose lifespan startup fails, as one whose database is down does."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup", message
        await send({"type": "lifespan.startup.failed", "message": STARTUP_FAILURE})
        return
    await _asgi_ok(send, "never served\n")
