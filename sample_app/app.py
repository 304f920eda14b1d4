"""The sample app: a plain WSGI application (PEP 3333) that exercises the bundle end to end.

Endpoints:

- ``GET /``            HTML home page: the client address and scheme the app sees, links, a form
- ``GET /api/info``    JSON: what the server put in the environ (REMOTE_ADDR, wsgi.url_scheme, ...)
- ``POST /api/echo``   JSON: the posted JSON document, echoed back (400 when it is not JSON)
- ``POST /upload``     multipart/form-data: name, size and sha256 of each uploaded file (JSON)
- ``GET /stream``      a chunked, unbuffered text stream (``?lines=N&delay=S``)
- ``GET /healthz``     200 "ok": used by the compose health checks
- ``GET /chat``        a chat page; its JavaScript talks over a WebSocket to ``/ws/chat``
                       (:mod:`sample_app.chat`; messages reach the clients of the same worker)
- ``/static/...``      served by nginx from ``sample_app/static``; the app itself answers 404

REMOTE_ADDR and wsgi.url_scheme are whatever the server set: behind nginx the server takes them
from X-Forwarded-For/-Proto, because a unix-socket peer is trusted.  Every response carries
``X-Served-By: sample_app`` so a test can tell the app's answers from nginx's.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from sample_app.chat import chat_page, chat_socket

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

MAX_BODY = 64 * 1024 * 1024  # the app's own cap; nginx's client_max_body_size usually comes first
STREAM_MAX_LINES = 100
STREAM_MAX_DELAY = 2.0


def client_view(environ: Environ) -> dict[str, Any]:
    """What the app knows about the request, as the server presented it."""
    return {
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "scheme": environ.get("wsgi.url_scheme", ""),
        "host": environ.get("HTTP_HOST", environ.get("SERVER_NAME", "")),
        "method": environ.get("REQUEST_METHOD", ""),
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "server_software": environ.get("SERVER_SOFTWARE", ""),
        "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
        "forwarded_proto": environ.get("HTTP_X_FORWARDED_PROTO"),
        "pid": os.getpid(),
    }


class HTTPError(Exception):
    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def _respond(start_response: StartResponse, status: str, body: bytes, content_type: str,
             extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
               ("X-Served-By", "sample_app"), *(extra or [])]
    start_response(status, headers)
    return [body]


def _json(start_response: StartResponse, data: Any, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
    return _respond(start_response, status, body, "application/json")


def read_body(environ: Environ) -> bytes:
    """The request body: Content-Length bytes, or up to EOF when the server marks the input as
    terminated (chunked requests)."""
    stream = environ["wsgi.input"]
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise HTTPError("400 Bad Request", "bad Content-Length") from None
        if length > MAX_BODY:
            raise HTTPError("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
        return stream.read(length) if length > 0 else b""
    if environ.get("wsgi.input_terminated"):
        data = stream.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise HTTPError("413 Content Too Large", f"body larger than {MAX_BODY} bytes")
        return bytes(data)
    return b""


def parse_multipart(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """Parts of a multipart/form-data body (RFC 7578): name, filename, content type, data."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise HTTPError("400 Bad Request", "multipart/form-data without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise HTTPError("400 Bad Request", "malformed multipart body (no closing delimiter)")
    parts = []
    for chunk in chunks[1:-1]:
        # Each part: CRLF, header lines, CRLF CRLF, data, CRLF (which belongs to the delimiter).
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise HTTPError("400 Bad Request", "malformed multipart part")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise HTTPError("400 Bad Request", "multipart part without a blank line")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = _params(headers.get("content-disposition", ""))
        parts.append({"name": disposition.get("name", ""), "filename": disposition.get("filename"),
                      "content_type": headers.get("content-type", "text/plain"), "data": data})
    return parts


def _params(header: str) -> dict[str, str]:
    out = {}
    for item in header.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        out[key.lower()] = value.strip().strip('"')
    return out


# ---- pages ---------------------------------------------------------------------------------


def home_html(view: dict[str, Any]) -> str:
    """The home page for what the app knows about the request (shared with sample_app.asgi)."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in view.items())
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>appserver sample app</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<header><img src="/static/logo.svg" alt="" width="48" height="48"><h1>appserver sample app</h1></header>
<p>You reach this app from <strong id="remote-addr">{html.escape(view["remote_addr"])}</strong>
over <strong id="scheme">{html.escape(view["scheme"])}</strong>.</p>
<table>{rows}</table>
<h2>Try</h2>
<ul>
<li><a href="/api/info">/api/info</a>: the same as JSON</li>
<li><a href="/stream?lines=10&amp;delay=0.3">/stream</a>: a streamed response</li>
<li><a href="/static/hello.txt">/static/hello.txt</a>: a static file served by nginx</li>
<li><a href="/healthz">/healthz</a>: the health check</li>
<li><a href="/chat">/chat</a>: a chat over a WebSocket</li>
</ul>
<h2>Upload a file</h2>
<form method="post" action="/upload" enctype="multipart/form-data">
<input type="file" name="file"> <button type="submit">Upload</button>
</form>
</body>
</html>
"""
    return page


def home(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    page = home_html(client_view(environ))
    return _respond(start_response, "200 OK", page.encode(), "text/html; charset=utf-8")


def api_info(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _json(start_response, client_view(environ))


def api_echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = read_body(environ)
    try:
        document = json.loads(body or b"null")
    except ValueError as exc:
        raise HTTPError("400 Bad Request", f"not JSON: {exc}") from None
    return _json(start_response, {"echo": document, "client": client_view(environ)})


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    content_type = environ.get("CONTENT_TYPE", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPError("415 Unsupported Media Type", "send multipart/form-data")
    return _json(start_response, upload_summary(read_body(environ), content_type))


def upload_summary(body: bytes, content_type: str) -> dict[str, Any]:
    """What /upload answers (the ASGI twin answers the same): each file's name, type, size and
    SHA-256, the plain fields, and the body's size."""
    files, fields = [], {}
    for part in parse_multipart(body, content_type):
        if part["filename"] is None:
            fields[part["name"]] = part["data"].decode("utf-8", "replace")
            continue
        files.append({"field": part["name"], "filename": part["filename"],
                      "content_type": part["content_type"], "size": len(part["data"]),
                      "sha256": hashlib.sha256(part["data"]).hexdigest()})
    return {"files": files, "fields": fields, "body_bytes": len(body)}


def stream(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        lines = min(int(query.get("lines", ["5"])[0]), STREAM_MAX_LINES)
        delay = min(float(query.get("delay", ["0.1"])[0]), STREAM_MAX_DELAY)
    except ValueError:
        raise HTTPError("400 Bad Request", "lines must be an integer and delay a number") from None
    # No Content-Length: the server sends it chunked.  X-Accel-Buffering tells nginx to pass
    # each chunk on as it comes instead of buffering the whole response.
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Cache-Control", "no-store"), ("X-Accel-Buffering", "no"),
                              ("X-Served-By", "sample_app")])

    def generate() -> Iterator[bytes]:
        for i in range(max(lines, 0)):
            if i and delay > 0:
                time.sleep(delay)
            yield f"line {i + 1} of {lines} at {time.time():.3f}\n".encode()

    return generate()


def healthz(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    return _respond(start_response, "200 OK", b"ok\n", "text/plain; charset=utf-8",
                    [("Cache-Control", "no-store")])


ROUTES: dict[str, dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]]] = {
    "/": {"GET": home},
    "/api/info": {"GET": api_info},
    "/api/echo": {"POST": api_echo},
    "/upload": {"POST": upload},
    "/stream": {"GET": stream},
    "/healthz": {"GET": healthz},
    "/chat": {"GET": chat_page},
    "/ws/chat": {"GET": chat_socket},
}


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point."""
    path = environ.get("PATH_INFO") or "/"
    method = environ.get("REQUEST_METHOD", "GET")
    handlers = ROUTES.get(path)
    try:
        if handlers is None:
            raise HTTPError("404 Not Found", f"no page at {path}")
        handler = handlers.get(method) or (handlers.get("GET") if method == "HEAD" else None)
        if handler is None:
            allow = ", ".join(sorted({*handlers, "HEAD"} if "GET" in handlers else handlers))
            raise HTTPError("405 Method Not Allowed", f"{method} not allowed here",
                            [("Allow", allow)])
        return handler(environ, start_response)
    except HTTPError as exc:
        return _respond(start_response, exc.status, (exc.message + "\n").encode(),
                        "text/plain; charset=utf-8", exc.headers)
