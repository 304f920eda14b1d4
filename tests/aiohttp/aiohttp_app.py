"""A real aiohttp app for tests/aiohttp: JSON echo, a streamed response, a WebSocket echo, a slow
endpoint, and what the app sees of the client (remote, scheme)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.Response:
    data = await request.json()
    return web.json_response({"got": data, "pid": os.getpid()})


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for i in range(5):
        await response.write(f"chunk {i}\n".encode())
        await asyncio.sleep(0.01)
    await response.write_eof()
    return response


async def ws(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type == WSMsgType.TEXT:
            await socket.send_str("echo: " + message.data)
        elif message.type == WSMsgType.BINARY:
            await socket.send_bytes(message.data)
    return socket


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "1")))
    return web.Response(text="slow done")


async def client(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote, "scheme": request.scheme,
                              "pid": os.getpid()})


async def hello(request: web.Request) -> web.Response:
    return web.Response(text=f"pid={os.getpid()}")


app = web.Application()
app.add_routes([web.get("/", hello), web.post("/echo", echo), web.get("/stream", stream),
                web.get("/ws/echo", ws), web.get("/slow", slow), web.get("/client", client)])


def wsgi_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    raise AssertionError("never served under -k aiohttp")


async def _unreachable(app: web.Application) -> None:
    raise RuntimeError("the database is unreachable")


def failing_app() -> web.Application:
    """A factory (``aiohttp_app:failing_app()``) whose on_startup fails."""
    broken = web.Application()
    broken.on_startup.append(_unreachable)
    return broken


async def make_app() -> web.Application:
    """An ``async def`` factory, as aiohttp's GunicornWebWorker takes it (``aiohttp_app:make_app``):
    awaited in the worker's loop, so it can open what the app needs first."""
    await asyncio.sleep(0)
    made = web.Application()
    made["made_in"] = os.getpid()

    async def factory(request: web.Request) -> web.Response:
        return web.json_response({"made_in": request.app["made_in"], "pid": os.getpid()})

    made.add_routes([web.get("/", hello), web.get("/factory", factory)])
    return made


async def not_an_app() -> str:
    return "oops"


async def asgi_app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("never served under -k aiohttp")
