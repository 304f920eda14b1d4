"""A Quart app for tests/asgi/test_through_nginx.py (imported by the server as ``quart_app``):
JSON, a streamed response, a body read as a stream, a form upload, state from lifespan
startup (``before_serving``), a WebSocket echo and a long stream that waits for the client to go
away (``disconnect quart`` in the file named by ``$ASGI_DISCONNECT_MARK``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, request, websocket

app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = None  # nginx's client_max_body_size is the limit
STATE: dict[str, Any] = {}


@app.before_serving
async def startup() -> None:
    STATE["db"] = "connected"


@app.get("/")
async def home() -> dict[str, str]:
    return {"hello": "quart"}


@app.post("/json")
async def echo_json() -> dict[str, Any]:
    return {"got": await request.get_json(), "db": STATE.get("db")}


@app.get("/stream")
async def stream() -> Any:
    count = int(request.args.get("n", "100"))

    async def numbers() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"%d\n" % i

    return numbers(), 200, {"Content-Type": "text/plain"}


@app.post("/upload")
async def upload() -> dict[str, Any]:
    digest = hashlib.sha256()
    total = pieces = 0
    async for chunk in request.body:
        digest.update(chunk)
        total += len(chunk)
        pieces += 1
    return {"total": total, "pieces": pieces, "sha256": digest.hexdigest()}


@app.post("/form")
async def form() -> dict[str, Any]:
    fields = await request.form
    files = await request.files
    upload = files["file"]
    return {"name": fields["name"], "filename": upload.filename, "size": len(upload.read())}


@app.get("/until-disconnect")
async def until_disconnect() -> Any:
    async def waiting() -> AsyncIterator[bytes]:
        yield b"x" * 16384
        try:
            await asyncio.sleep(60)  # nothing more to send for a long time
        except asyncio.CancelledError:
            # Quart cancels the request's task when receive() gives http.disconnect.
            path = os.environ.get("ASGI_DISCONNECT_MARK")
            if path:
                with open(path, "a") as fh:
                    fh.write("disconnect quart\n")
            raise

    return waiting(), 200, {"Content-Type": "application/octet-stream",
                            "X-Accel-Buffering": "no"}


@app.websocket("/ws/echo")
async def echo_websocket() -> None:
    while True:
        await websocket.send("echo: " + await websocket.receive())
