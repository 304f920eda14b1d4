"""A Quart app for tests/asgi/test_through_nginx.py (imported by the server as ``quart_app``):
JSON, a streamed response, a body read as a stream, a form upload, and state from lifespan
startup (``before_serving``)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, request

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
