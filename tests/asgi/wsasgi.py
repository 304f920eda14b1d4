"""ASGI WebSocket apps for tests/asgi/test_websocket.py (imported by the server as ``wsasgi``).

``app`` dispatches on the path; HTTP and lifespan go to ``rawasgi.app``.  What an app saw at the
end of a WebSocket (``websocket.disconnect`` code and reason, an exception on send) is appended
to the file named by ``$ASGI_WS_MARK`` as ``<path> <what>`` lines.

Plain ASGI:

* ``/echo``: accepts (subprotocol ``chat`` when offered, header ``x-extra: yes``) and echoes text
  and binary messages; the text ``close-me`` makes it close with 4001 "bye".
* ``/scope``: accepts and sends the scope as JSON text.
* ``/hold``: accepts and waits for the disconnect.
* ``/deny``: ``websocket.close`` before accept (a 403).
* ``/deny-custom``: the ``websocket.http.response`` extension: 418 with a body in two pieces.
* ``/after-close``: accepts, closes, then sends (which must raise an OSError).
* ``/nothing``: returns without accepting (a 500).

Frameworks: ``/starlette`` (a ``WebSocketEndpoint``) and ``/fastapi`` (``@app.websocket``) echo.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI, WebSocketDisconnect
from fastapi import WebSocket as FastWebSocket
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

try:
    import rawasgi  # the server under test has tests/asgi on its path
except ImportError:  # through the bundle: imported as tests.asgi.wsasgi
    from tests.asgi import rawasgi

Scope = dict[str, Any]


def _mark(path: str, what: str) -> None:
    mark = os.environ.get("ASGI_WS_MARK")
    if mark:
        with open(mark, "a") as fh:
            fh.write(f"{path} {what}\n")


async def _until_disconnect(path: str, receive: Any) -> dict[str, Any]:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _mark(path, f"disconnect {message['code']} {message.get('reason') or ''}".rstrip())
            return dict(message)


async def raw(scope: Scope, receive: Any, send: Any) -> None:
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/deny-custom":
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"teapot")]})
        await send({"type": "websocket.http.response.body", "body": b"no sockets ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"for you"})
        return
    if path == "/nothing":
        return
    if path == "/echo":
        subprotocol = "chat" if "chat" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol,
                    "headers": [(b"x-extra", b"yes")]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                _mark(path, f"disconnect {message['code']} {message.get('reason') or ''}".rstrip())
                return
            if message.get("text") == "close-me":
                await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
                await _until_disconnect(path, receive)
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    await send({"type": "websocket.accept"})
    if path == "/scope":
        await send({"type": "websocket.send", "text": json.dumps(rawasgi._text(dict(scope)))})
        await _until_disconnect(path, receive)
    elif path == "/hold":
        await _until_disconnect(path, receive)
    elif path == "/after-close":
        await send({"type": "websocket.close", "code": 1000})
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            _mark(path, f"oserror {type(exc).__name__}")
        else:
            _mark(path, "no error")


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(f"starlette: {data}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        _mark("/starlette", f"disconnect {close_code}")


starlette_app = Starlette(routes=[WebSocketRoute("/starlette", Echo)])

fastapi_app = FastAPI()


@fastapi_app.websocket("/fastapi")
async def fastapi_echo(websocket: FastWebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_text()
            await websocket.send_text(f"fastapi: {data}")
    except WebSocketDisconnect as exc:
        _mark("/fastapi", f"disconnect {exc.code}")


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        await rawasgi.app(scope, receive, send)
    elif scope["path"] == "/starlette":
        await starlette_app(scope, receive, send)
    elif scope["path"] == "/fastapi":
        await fastapi_app(scope, receive, send)
    else:
        await raw(scope, receive, send)
