"""ASGI 3.0 glue, free of I/O: which kind an app is, request -> HTTP scope, response messages ->
the same framing as WSGI (:class:`appserver.wsgi.Response`).

The scope is built from the WSGI environ of the same request (:func:`appserver.wsgi.build_environ`):
one place decides the client address and scheme under the trusted-proxy rules
(:mod:`appserver.forwarded`), which header names with "_" are dropped (``header_map``), the mount
point, and refuses contradictory scheme headers; the access log and request hooks get that
environ as on the WSGI path.  The scope's headers are the request's header section only (never
trailers), lower-cased, with the names the environ dropped left out too: Django maps
``X_Real_Ip`` and ``X-Real-Ip`` to one META key, so passing both would let a client smuggle a
value (the issue's rule, as nginx's ``underscores_in_headers off``).

Spec: https://asgi.readthedocs.io/en/latest/specs/www.html (HTTP 2.4) and lifespan.html.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

from .http.events import RequestHead
from .http.response import ResponseError
from .wsgi import Response, WSGIContext

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SPEC_VERSION = "2.4"
ASGI_VERSION = {"version": "3.0", "spec_version": SPEC_VERSION}
LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


def is_asgi_app(app: Any) -> bool:
    """An ASGI 3.0 callable: a coroutine function, or an object whose ``__call__`` is one
    (Starlette, FastAPI, Django's ASGIHandler, Quart, middleware classes)."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the bound method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def app_kind_error(app: Any, interface: str) -> str:
    """Why ``app`` cannot be served with this ``interface`` ("" when it can)."""
    if interface == "asgi" and not is_asgi_app(app):
        return ("interface 'asgi' (-k asgi) needs an ASGI app: async def app(scope, receive, "
                f"send) or an object with such a __call__; got {_describe(app)}, which looks "
                "like a WSGI app (serve it with -k asyncio, gthread, ...)")
    if interface == "wsgi" and is_asgi_app(app):
        return (f"{_describe(app)} is an ASGI app (an async callable): serve it with -k asgi "
                "(or --interface asgi on the asyncio class)")
    return ""


def _describe(app: Any) -> str:
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{getattr(app, '__module__', None) or type(app).__module__}.{name}"


class ScopeBuilder:
    """The scopes of one worker.  The common request -- origin-form target, no forwarded or
    scheme header, no header name with "_" -- takes a direct path that needs no environ; any
    other goes through the environ (:func:`scope_from_environ`), where the trust rules live."""

    def __init__(self, ctx: WSGIContext) -> None:
        self.ctx = ctx
        self.watched = frozenset(key[5:].lower().replace("_", "-").encode("latin-1")
                                 for key in ctx.watched if key.startswith("HTTP_"))

    def direct(self, head: RequestHead, peer: tuple[str, int] | None,
               local: tuple[str, int] | None, state: dict[str, Any] | None
               ) -> dict[str, Any] | None:
        """The scope, or None when the request needs the environ's rules."""
        target = head.target
        if target[:1] != b"/":
            return None
        watched = self.watched
        headers = []
        for name, value in head.headers:
            lname = name.lower()
            if lname in watched or b"_" in lname:
                return None
            headers.append((lname, value))
        raw, _, query = target.partition(b"#")[0].partition(b"?")
        decoded = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("latin-1")
        root = self.ctx.script_name
        if root and not (decoded.startswith(root)
                         and decoded[len(root):len(root) + 1] in ("", "/")):
            decoded = root + decoded  # the root path was not in the request: as uvicorn
            raw = root.encode("latin-1") + raw
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": head.version,
            "method": head.method,
            "scheme": self.ctx.scheme,
            "path": _text(decoded),
            "raw_path": raw,
            "query_string": query,
            "root_path": _text(root),
            "headers": headers,
            "client": peer,
            "server": local,
        }
        if state is not None:
            scope["state"] = state.copy()
        return scope


def scope_from_environ(environ: dict[str, Any], head: RequestHead, header_map: str,
                local: tuple[str, int] | None, state: dict[str, Any] | None) -> dict[str, Any]:
    """The ``http`` scope of one request, from its environ (see the module notes)."""
    root_path = environ["SCRIPT_NAME"]
    full = root_path + environ["PATH_INFO"]  # latin-1 text of the percent-decoded bytes
    target = head.target
    if target[:1] == b"/":
        raw = target.partition(b"?")[0].partition(b"#")[0]
        decoded = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("latin-1")
        if decoded != full:
            raw = root_path.encode("latin-1") + raw  # the root path was not in the request
    else:  # absolute-form or "*": the environ has the path
        raw = full.encode("latin-1")
    keep_underscored = header_map == "dangerous"
    headers = [(name.lower(), value) for name, value in head.headers
               if keep_underscored or b"_" not in name]
    if target[:1] != b"/" and "HTTP_HOST" in environ:  # absolute-form: its authority is Host
        headers = [(n, v) for n, v in headers if n != b"host"]
        headers.append((b"host", environ["HTTP_HOST"].encode("latin-1")))
    remote = environ["REMOTE_ADDR"]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": head.version,
        "method": head.method,
        "scheme": environ["wsgi.url_scheme"],
        "path": _text(full),
        "raw_path": raw,
        "query_string": environ["QUERY_STRING"].encode("latin-1"),
        "root_path": _text(root_path),
        "headers": headers,
        "client": (remote, int(environ["REMOTE_PORT"])) if remote else None,
        "server": local,
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


def _text(latin: str) -> str:
    """Percent-decoded bytes (carried as latin-1 text) as the UTF-8 text ASGI wants."""
    if latin.isascii():
        return latin
    return latin.encode("latin-1").decode("utf-8", "replace")


_phrases: dict[int, str] = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def start_response(response: Response, message: Message) -> None:
    """Apply an ``http.response.start`` message to ``response``: the same checks and framing
    rules as a WSGI start_response (hop-by-hop fields dropped, Connection: close honoured)."""
    status = message.get("status")
    if type(status) is not int or not 100 <= status <= 999:  # noqa: E721
        raise ResponseError(f"invalid status {status!r} in http.response.start")
    raw: Iterable[Any] = message.get("headers") or ()
    try:
        items = iter(raw)
    except TypeError:
        raise ResponseError(f"http.response.start: headers must be an iterable of (name, value) "
                            f"pairs, got {type(raw).__name__}") from None
    headers: list[tuple[str, str]] = []
    for item in items:
        try:
            name, value = item
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        except (TypeError, ValueError, AttributeError):
            raise ResponseError(f"header {item!r} is not a (name, value) pair of bytes") from None
        if type(name) is not bytes or type(value) is not bytes:  # noqa: E721 - no str, no subclass
            raise ResponseError(f"header {item!r}: names and values must be bytes")
    response.start(status, _phrases.get(status) or f"{status} ", headers)


def check_body(message: Message) -> tuple[bytes, bool]:
    """(body, more_body) of an ``http.response.body`` message."""
    body = message.get("body", b"")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ResponseError(f"http.response.body: body must be bytes, got {type(body).__name__}")
    return bytes(body), bool(message.get("more_body", False))
