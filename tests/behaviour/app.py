"""The WSGI app of the behaviour suite: one route per behaviour, wrapped in wsgiref.validate
(except the routes that deliberately break PEP 3333), so any PEP 3333 violation by the server
fails the request."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

Environ = dict[str, Any]


def _text(start_response: Any, body: bytes, status: str = "200 OK",
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))] + (headers or []))
    return [body]


def _query(environ: Environ) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in environ["QUERY_STRING"].split("&") if "=" in item)
    return dict(pairs)


def hello(environ: Environ, start_response: Any) -> Iterable[bytes]:
    return _text(start_response, b"hello\n")


def echo(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Read the body in pieces and answer its length and sha256 (works for any size)."""
    digest = hashlib.sha256()
    size = 0
    stream = environ["wsgi.input"]
    while data := stream.read(65536):
        digest.update(data)
        size += len(data)
    return _text(start_response, f"{size} {digest.hexdigest()}".encode())


def echo_body(environ: Environ, start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0) or 1 << 30)
    return _text(start_response, body)


def lines(environ: Environ, start_response: Any) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = list(stream)
    return _text(start_response, json.dumps(
        {"first": first.decode(), "rest": [line.decode() for line in rest]}).encode())


def stream(environ: Environ, start_response: Any) -> Iterator[bytes]:
    count = int(_query(environ).get("n", "5"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    for i in range(count):
        yield f"chunk {i}\n".encode()


def big(environ: Environ, start_response: Any) -> Iterator[bytes]:
    size = int(_query(environ)["n"])
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    block = b"x" * 65536
    while size > 0:
        yield block[:size]
        size -= len(block)


def file(environ: Environ, start_response: Any) -> Iterable[bytes]:
    size = int(_query(environ).get("n", "100000"))
    fh = tempfile.TemporaryFile()
    fh.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    fh.seek(0)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](fh, 8192)
    return wrapper


def write_callable(environ: Environ, start_response: Any) -> Iterable[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and returned\n"]


def environ_json(environ: Environ, start_response: Any) -> Iterable[bytes]:
    keys = {k: v for k, v in environ.items() if isinstance(v, str)}
    keys["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    keys["wsgi.multithread"] = environ["wsgi.multithread"]
    return _text(start_response, json.dumps(keys).encode(), headers=[("X-Pid", str(os.getpid()))])


def raise_before(environ: Environ, start_response: Any) -> Iterable[bytes]:
    raise RuntimeError("boom before start_response: secret-traceback-marker")


def raise_after(environ: Environ, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial "
    raise RuntimeError("boom inside the body iterator")


def status(environ: Environ, start_response: Any) -> Iterable[bytes]:
    code = environ["PATH_INFO"].rsplit("/", 1)[1]
    headers = [] if code in ("204", "304") else [("Content-Type", "text/plain")]
    start_response(f"{code} Custom", headers)
    return []


ROUTES = {
    "/hello": hello, "/echo": echo, "/echo-body": echo_body, "/lines": lines, "/stream": stream,
    "/big": big, "/write": write_callable, "/environ": environ_json,
    "/raise-before": raise_before, "/raise-after": raise_after,
}


def _dispatch(environ: Environ, start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/status/"):
        return status(environ, start_response)
    handler = ROUTES.get(path)
    if handler is None:
        return _text(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)


validated = validator(_dispatch)


def bad_header(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: injected=1")])
    return [b"never sent\n"]


def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/bad-header":  # breaks PEP 3333 on purpose: not validated
        return bad_header(environ, start_response)
    if environ["PATH_INFO"] == "/file":  # validate would hide the file_wrapper from the server
        return file(environ, start_response)
    return validated(environ, start_response)
