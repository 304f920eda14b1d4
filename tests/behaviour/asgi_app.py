"""The ASGI twin of tests/behaviour/app.py (``-k asgi``): the same routes and answers, so that
the behaviour suite checks the ASGI path too.  ``/environ`` answers the WSGI keys the tests
read, computed from the scope, so the same assertions hold the scope to the environ's rules."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

Scope = dict[str, Any]


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client went away (or its body broke HTTP)")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def _text(send: Any, body: bytes, status: int = 200,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _query(scope: Scope) -> dict[str, str]:
    text = scope["query_string"].decode("latin-1")
    return dict(item.split("=", 1) for item in text.split("&") if "=" in item)


def _environ(scope: Scope) -> dict[str, Any]:
    env: dict[str, Any] = {"QUERY_STRING": scope["query_string"].decode("latin-1"),
                           "REQUEST_METHOD": scope["method"],
                           "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
                           "PATH_INFO": scope["path"], "wsgi.url_scheme": scope["scheme"],
                           "wsgi.multithread": True,
                           "REMOTE_ADDR": scope["client"][0] if scope["client"] else ""}
    raw = scope["raw_path"].decode("latin-1")
    env["RAW_URI"] = raw + ("?" + env["QUERY_STRING"] if env["QUERY_STRING"] else "")
    for name, value in scope["headers"]:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        env[key] = env[key] + "," + text if key in env else text
    host = env.get("HTTP_HOST", "")
    env["SERVER_NAME"], _, port = host.partition(":")
    env["SERVER_PORT"] = port or ("443" if scope["scheme"] == "https" else "80")
    return env


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: not supported (auto mode serves on)
    path = scope["path"]
    query = _query(scope)
    if path == "/hello":
        await _text(send, b"hello\n")
    elif path == "/echo":
        digest = hashlib.sha256()
        size = 0
        async for data in _body(receive):
            digest.update(data)
            size += len(data)
        await _text(send, f"{size} {digest.hexdigest()}".encode())
    elif path == "/echo-body":
        await _text(send, b"".join([data async for data in _body(receive)]))
    elif path == "/lines":
        body = b"".join([data async for data in _body(receive)])
        first, *rest = body.splitlines(keepends=True)
        await _text(send, json.dumps({"first": first.decode(),
                                      "rest": [line.decode() for line in rest]}).encode())
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(int(query.get("n", "5"))):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body"})
    elif path in ("/big", "/file"):
        size = int(query["n"] if path == "/big" else query.get("n", "100000"))
        block = b"x" * 65536 if path == "/big" else None
        data = bytes(range(256)) * (size // 256) + b"z" * (size % 256) if block is None else b""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(size).encode())]})
        sent = 0
        while sent < size:
            piece = block[:size - sent] if block is not None else data[sent:sent + 65536]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
    elif path == "/write":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"written ", "more_body": True})
        await send({"type": "http.response.body", "body": b"and returned\n"})
    elif path == "/environ":
        await _text(send, json.dumps(_environ(scope)).encode(),
                    headers=[(b"x-pid", str(os.getpid()).encode())])
    elif path == "/raise-before":
        raise RuntimeError("boom before start_response: secret-traceback-marker")
    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial ", "more_body": True})
        raise RuntimeError("boom inside the body iterator")
    elif path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        headers = [] if code in (204, 304) else [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body"})
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nSet-Cookie: injected=1")]})
        await send({"type": "http.response.body", "body": b"never sent\n"})
    else:
        await _text(send, b"not found\n", 404)
