"""Plain ASGI apps for tests/asgi/test_zerocopysend.py and test_factory.py (imported by the
server under test as ``sendasgi``).

``app`` (no lifespan needed; it answers it):

* ``/zc?path=P[&offset=O][&count=C][&seek=S][&length=L]``: one ``http.response.zerocopysend``
  of the file at P (opened by the app, positioned at S first), the whole body; ``length``: the
  app's own Content-Length.
* ``/zc-parts?path=P[&length=L]``: ``head:`` as a body message, then zerocopysend of bytes
  10..110 (offset 10, count 100), then of 50 more from the file's position (no offset), then
  ``:tail`` as the last body message.
* ``/zc-big?path=P&mark=M``: 1 MiB zerocopysends of P, 400 of them; what ended them is written
  to M (``oserror <class>`` when send() raised, ``done`` when all went out).
* ``/pathsend?path=P``: ``http.response.pathsend`` of P.
* ``/zc-bad?what=W``: an invalid message (no file, a negative offset, a pipe).
* websocket ``/flood?mark=M``: accepts, then sends 64 KiB messages until send() raises; writes
  ``{"send": <exception class>, "seconds": s, "receive": <the next receive()>}`` to M as JSON.

Factories (tests/asgi/test_factory.py): ``create_app`` (async, no arguments: 'sendasgi:
create_app()'), ``make_app`` (a plain def factory), ``failing_factory`` (async, raises),
``one_argument`` (async def app(scope): not ASGI 3).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
MIB = 1 << 20


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _write_mark(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["type"] == "websocket":
        await _flood(query, receive, send)
        return
    path = scope["path"]
    headers = [(b"content-length", query["length"].encode())] if "length" in query else []
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    zc = "http.response.zerocopysend"
    if path == "/zc":
        with open(query["path"], "rb") as fh:
            fh.seek(int(query.get("seek", 0)))
            message: dict[str, Any] = {"type": zc, "file": fh}
            for key in ("offset", "count"):
                if key in query:
                    message[key] = int(query[key])
            await send(start)
            await send(message)
    elif path == "/zc-parts":
        with open(query["path"], "rb") as fh:
            await send(start)
            await send({"type": "http.response.body", "body": b"head:", "more_body": True})
            await send({"type": zc, "file": fh, "offset": 10, "count": 100, "more_body": True})
            await send({"type": zc, "file": fh, "count": 50, "more_body": True})
            await send({"type": "http.response.body", "body": b":tail"})
    elif path == "/zc-big":
        with open(query["path"], "rb") as fh:
            await send(start)
            try:
                for _ in range(400):
                    await send({"type": zc, "file": fh, "offset": 0, "count": MIB,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            except OSError as exc:
                _write_mark(query["mark"], f"oserror {type(exc).__name__}")
                raise
            _write_mark(query["mark"], "done")
    elif path == "/pathsend":
        await send(start)
        await send({"type": "http.response.pathsend", "path": query["path"]})
    elif path == "/zc-bad":
        await send(start)
        what = query["what"]
        if what == "nofile":
            await send({"type": zc, "file": b"not a file"})
        elif what == "offset":
            with open(__file__, "rb") as fh:
                await send({"type": zc, "file": fh, "offset": -1})
        else:
            read, write = os.pipe()
            try:
                with os.fdopen(read, "rb") as fh:
                    await send({"type": zc, "file": fh})
            finally:
                os.close(write)
    else:
        await send(start)
        await send({"type": "http.response.body", "body": json.dumps(
            sorted(scope.get("extensions") or ())).encode()})


async def _flood(query: dict[str, str], receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    began = time.monotonic()
    payload = b"x" * 65536
    outcome: dict[str, Any] = {"send": None}
    try:
        for _ in range(100000):  # 6 GiB: far past any socket buffer
            await send({"type": "websocket.send", "bytes": payload})
    except OSError as exc:
        outcome["send"] = type(exc).__name__
    outcome["seconds"] = round(time.monotonic() - began, 2)
    outcome["receive"] = await asyncio.wait_for(receive(), 5)
    _write_mark(query["mark"], json.dumps(outcome))


# ---- factories ----------------------------------------------------------------------------

_made_in: list[asyncio.AbstractEventLoop] = []


async def create_app() -> Any:
    """An async factory: awaited once in the worker's loop ('sendasgi:create_app()')."""
    _made_in.append(asyncio.get_running_loop())

    async def made(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        same = asyncio.get_running_loop() is _made_in[0]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body",
                    "body": f"made by the factory, same loop: {same}".encode()})

    return made


def make_app() -> Any:
    """A plain def factory: 'sendasgi:make_app()'."""
    return app


async def failing_factory() -> Any:
    raise RuntimeError("the database is unreachable")


async def one_argument(scope: Scope) -> None:
    """An ASGI 2-style callable: not an ASGI 3 app."""
