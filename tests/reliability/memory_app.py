"""The WSGI app of the memory scenario (tests/reliability/test_memory.py), loaded by the server
under test as ``tests.reliability.memory_app:application``.

* ``POST /upload`` reads ``wsgi.input`` in chunks of :data:`CHUNK` and answers
  ``<crc32> <length>`` of what it read (CRC-32: a checksum that catches a lost,
  repeated or reordered chunk at ten times sha256's speed, which matters for 1 GiB);
* ``GET /download?size=N`` streams N bytes of :func:`pattern` from a generator (the server's
  write path: each chunk is a new bytes object the server must send before it asks for the next);
* ``GET /download-file?size=N`` sends the same bytes as ``wsgi.file_wrapper`` of a file (the
  server's sendfile path), from the file :func:`pattern_file` writes (once) in the directory
  ``MEMORY_APP_DIR`` names (``server.raw_env``).

The client checksums the same :func:`pattern` to know the value to expect.

``asgi_application`` is its ASGI twin (``-k asgi``): the upload read with ``receive()`` (the
server's back-pressure on the request body), the download sent as one ``http.response.body``
message with ``more_body`` per chunk (``send()``'s flow control).  ASGI has no
``wsgi.file_wrapper`` and the server does not implement the ``http.response.pathsend`` extension
yet, so ``/download-file`` reads the file in chunks and sends them the same way.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from tests.reliability.apps import Receive, Send, lifespan

StartResponse = Callable[..., object]

CHUNK = 256 << 10          # bytes per read and per yielded chunk
BLOCK = 1 << 20            # the pattern's period: one MiB, numbered
_BASE = hashlib.shake_256(b"appserver memory scenario").digest(BLOCK)


def block(index: int) -> bytes:
    """The ``index``-th MiB of the pattern: its number, then fixed pseudo-random bytes (so a
    block sent twice or out of order changes the digest)."""
    return index.to_bytes(8, "big") + _BASE[8:]


def pattern(size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """``size`` bytes of the pattern in pieces of ``chunk`` (which divides :data:`BLOCK`)."""
    sent = 0
    index = 0
    while sent < size:
        data = block(index)
        index += 1
        for start in range(0, BLOCK, chunk):
            piece = data[start:start + min(chunk, size - sent)]
            if not piece:
                return
            sent += len(piece)
            yield piece


def pattern_digest(size: int) -> str:
    crc = 0
    for piece in pattern(size, BLOCK):
        crc = zlib.crc32(piece, crc)
    return f"{crc:08x}"


def _size(environ: dict[str, object]) -> int:
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    return int(query.get("size", ["0"])[0])


def pattern_file(directory: str, size: int) -> str:
    """The file holding ``size`` bytes of the pattern in ``directory``, written if missing."""
    path = os.path.join(directory, f"pattern-{size}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != size:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            for piece in pattern(size, BLOCK):
                fh.write(piece)
        os.replace(tmp, path)
    return path


def application(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/upload":
        crc = 0
        length = 0
        read = environ["wsgi.input"].read  # type: ignore[attr-defined]
        while chunk := read(CHUNK):
            crc = zlib.crc32(chunk, crc)
            length += len(chunk)
        answer = f"{crc:08x} {length}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]
    if path in ("/download", "/download-file"):
        size = _size(environ)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        if path == "/download":
            return pattern(size)
        wrapper = environ["wsgi.file_wrapper"]
        directory = os.environ.get("MEMORY_APP_DIR") or "/tmp"
        return wrapper(open(pattern_file(directory, size), "rb"), CHUNK)  # type: ignore[operator]
    if path == "/pid":
        answer = f"{os.getpid()}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


async def _start(send: Send, status: int, content_type: bytes, length: int) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(length).encode())]})


async def asgi_application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    path = scope["path"]
    if path == "/upload":
        crc = 0
        length = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("the client went away during the upload")
            chunk = message.get("body", b"")
            crc = zlib.crc32(chunk, crc)
            length += len(chunk)
            if not message.get("more_body"):
                break
        answer = f"{crc:08x} {length}\n".encode()
        await _start(send, 200, b"text/plain", len(answer))
        await send({"type": "http.response.body", "body": answer})
    elif path in ("/download", "/download-file"):
        size = int(parse_qs(scope["query_string"].decode("latin-1")).get("size", ["0"])[0])
        await _start(send, 200, b"application/octet-stream", size)
        if path == "/download":
            for piece in pattern(size):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        else:
            directory = os.environ.get("MEMORY_APP_DIR") or "/tmp"
            with open(pattern_file(directory, size), "rb") as fh:
                while piece := fh.read(CHUNK):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/pid":
        answer = f"{os.getpid()}\n".encode()
        await _start(send, 200, b"text/plain", len(answer))
        await send({"type": "http.response.body", "body": answer})
    else:
        await _start(send, 404, b"text/plain", 0)
        await send({"type": "http.response.body", "body": b""})
