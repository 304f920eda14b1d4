"""Starlette and FastAPI apps for tests/asgi/test_frameworks.py and test_through_nginx.py
(imported by the server as ``frameworks``): JSON, streaming, a streamed upload, a form upload,
background tasks, lifespan state, a WebSocket echo and a long stream that waits for the client to
go away.  A background task writes to the file named by ``$ASGI_BG_MARK``; the long stream writes
``disconnect <framework>`` to the file named by ``$ASGI_DISCONNECT_MARK`` when it sees
``http.disconnect``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Form, UploadFile
from fastapi import Request as FastRequest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def _mark(text: str, variable: str = "ASGI_BG_MARK") -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a") as fh:
            fh.write(text + "\n")


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    yield {"db": "connected", "pid": os.getpid()}


async def _numbers(count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield b"%d\n" % i


async def _until_disconnect(request: Request, name: str) -> AsyncIterator[bytes]:
    """A stream that sends a first part, then waits for more to send (a server-sent-events
    feed with nothing new): with nothing sent meanwhile, only ``http.disconnect`` from
    ``receive()`` tells the app that the client went away (Starlette itself does not listen
    for it under ASGI spec 2.4)."""
    yield b"x" * 16384
    while (await request.receive())["type"] != "http.disconnect":
        pass  # the (empty) request body
    _mark(f"disconnect {name}", "ASGI_DISCONNECT_MARK")


async def _echo_websocket(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("echo: " + await websocket.receive_text())
    except WebSocketDisconnect:
        pass


# ---- Starlette ------------------------------------------------------------------------------

async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def echo_json(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"got": data, "db": request.state.db})


async def stream(request: Request) -> StreamingResponse:
    return StreamingResponse(_numbers(int(request.query_params.get("n", "100"))),
                             media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    digest = hashlib.sha256()
    total = pieces = 0
    async for chunk in request.stream():
        digest.update(chunk)
        total += len(chunk)
        pieces += 1
    return JSONResponse({"total": total, "pieces": pieces, "sha256": digest.hexdigest()})


async def form(request: Request) -> JSONResponse:
    async with request.form() as data:
        upload = data["file"]
        assert not isinstance(upload, str)
        content = await upload.read()
        return JSONResponse({"name": data["name"], "filename": upload.filename,
                             "size": len(content)})


async def background(request: Request) -> PlainTextResponse:
    return PlainTextResponse("queued", background=BackgroundTask(_mark, "starlette"))


async def headers(request: Request) -> JSONResponse:
    return JSONResponse({"headers": [[k, v] for k, v in request.headers.items()],
                         "client": request.client and request.client.host})


async def until_disconnect(request: Request) -> StreamingResponse:
    return StreamingResponse(_until_disconnect(request, "starlette"),
                             media_type="application/octet-stream",
                             headers={"X-Accel-Buffering": "no"})


starlette_app = Starlette(routes=[
    Route("/", home), Route("/json", echo_json, methods=["POST"]), Route("/stream", stream),
    Route("/upload", upload, methods=["POST"]), Route("/form", form, methods=["POST"]),
    Route("/background", background), Route("/headers", headers),
    Route("/until-disconnect", until_disconnect), WebSocketRoute("/ws/echo", _echo_websocket),
], lifespan=lifespan)


# ---- FastAPI --------------------------------------------------------------------------------

fastapi_app = FastAPI(lifespan=lifespan)


@fastapi_app.get("/")
async def fast_home() -> dict[str, str]:
    return {"hello": "world"}


@fastapi_app.post("/json")
async def fast_json(item: dict[str, Any], request: FastRequest) -> dict[str, Any]:
    return {"got": item, "db": request.state.db}


@fastapi_app.get("/stream")
async def fast_stream(n: int = 100) -> StreamingResponse:
    return StreamingResponse(_numbers(n), media_type="text/plain")


@fastapi_app.post("/upload")
async def fast_upload(request: FastRequest) -> dict[str, Any]:
    digest = hashlib.sha256()
    total = pieces = 0
    async for chunk in request.stream():
        digest.update(chunk)
        total += len(chunk)
        pieces += 1
    return {"total": total, "pieces": pieces, "sha256": digest.hexdigest()}


@fastapi_app.post("/form")
async def fast_form(file: UploadFile, name: str = Form()) -> dict[str, Any]:
    content = await file.read()
    return {"name": name, "filename": file.filename, "size": len(content)}


@fastapi_app.get("/background")
async def fast_background(tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(_mark, "fastapi")
    return {"status": "queued"}


@fastapi_app.get("/sync")
def fast_sync() -> dict[str, str]:  # a plain def: FastAPI runs it in its thread pool
    return {"sync": "ok"}


@fastapi_app.get("/until-disconnect")
async def fast_until_disconnect(request: FastRequest) -> StreamingResponse:
    return StreamingResponse(_until_disconnect(request, "fastapi"),
                             media_type="application/octet-stream",
                             headers={"X-Accel-Buffering": "no"})


@fastapi_app.websocket("/ws/echo")
async def fast_websocket(websocket: WebSocket) -> None:
    await _echo_websocket(websocket)
