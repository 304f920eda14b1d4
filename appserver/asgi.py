"""ASGI 3.0 glue, free of I/O: which kind an app is, request -> HTTP scope, response messages ->
the same framing as WSGI (:class:`appserver.wsgi.Response`).

The scope of an ordinary request -- one that nginx forwards, X-Forwarded-For and
X-Forwarded-Proto included -- is built directly from the request head (:class:`ScopeBuilder`);
the trusted-proxy rules (which peers, which hop, scheme votes, contradictory scheme headers are
a 400) are the one rule object of :mod:`appserver.forwarded` that the environ uses too.  Any
other request is built from the WSGI environ of the same request
(:func:`appserver.wsgi.build_environ`), which decides the client address and scheme, which
header names with "_" are dropped or passed (``header_map``, forwarder headers) and the mount
point; tests/asgi/test_scope.py holds the two paths equal.  The access log and request hooks
get that environ as on the WSGI path.  The scope's headers are the request's header section only (never
trailers), lower-cased, with the names the environ dropped left out too: Django maps
``X_Real_Ip`` and ``X-Real-Ip`` to one META key, so passing both would let a client smuggle a
value (the issue's rule, as nginx's ``underscores_in_headers off``).

Spec: https://asgi.readthedocs.io/en/latest/specs/www.html (HTTP 2.4) and lifespan.html.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

from .forwarded import SchemeConflict
from .http.events import ProtocolError, RequestHead
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


def http_extensions() -> dict[str, Any]:
    """The ``extensions`` of an ``http`` scope (a fresh dict each time: apps may change it)."""
    return {"http.response.pathsend": {}, "http.response.zerocopysend": {},
            "http.response.trailers": {}}


def is_asgi_app(app: Any) -> bool:
    """An ASGI 3.0 callable: a coroutine function, or an object whose ``__call__`` is one
    (Starlette, FastAPI, Django's ASGIHandler, Quart, middleware classes)."""
    return _async_callable(app) is not None


def _async_callable(app: Any) -> Any:
    """The coroutine function ``app`` is called through (itself, or its ``__call__``), or None."""
    if inspect.iscoroutinefunction(app):
        return app
    call = getattr(app, "__call__", None)  # noqa: B004 - the bound method, not callable()
    return call if call is not None and inspect.iscoroutinefunction(call) else None


def asgi_signature_error(app: Any) -> str:
    """Why the async callable ``app`` cannot be called as ``app(scope, receive, send)`` ("" when
    it can, or when its signature cannot be read).  A zero-argument ``async def`` is an app
    factory (``async def create_app(): return app``): called per request it would fail on
    every one, so it is named as a factory and the spec that awaits it is given."""
    call = _async_callable(app)
    if call is None:
        return ""
    try:
        signature = inspect.signature(call)
    except (TypeError, ValueError):  # a C callable, an odd wrapper: trust it
        return ""
    try:
        signature.bind(None, None, None)
    except TypeError:
        pass
    else:
        return ""
    try:
        signature.bind()
    except TypeError:
        factory = False
    else:
        factory = call is app  # (an object's __call__() is no factory)
    if not factory:
        return (f"{_describe(app)}{signature} is async but cannot be called as "
                "app(scope, receive, send): an ASGI 3.0 app takes exactly those three "
                "arguments (ASGI 2 apps, app(scope) returning a coroutine, are not supported)")
    spec = f"{getattr(app, '__module__', '?')}:{getattr(app, '__qualname__', '?')}()"
    return (f"{_describe(app)}{signature} is an async def without (scope, receive, send): an "
            f"app factory, not an ASGI app; call it in the app spec, '{spec}' (as "
            "gunicorn's MODULE:factory()), and the worker awaits it once at start-up and "
            "serves the app it returns")


def _takes_no_arguments(function: Any) -> bool:
    try:
        inspect.signature(function).bind()
    except (TypeError, ValueError):
        return False
    return True


def app_kind_error(app: Any, interface: str) -> str:
    """Why ``app`` cannot be served with this ``interface`` ("" when it can)."""
    if interface == "asgi" and not is_asgi_app(app):
        kind = type(app)
        if kind.__module__.startswith("aiohttp.") and kind.__name__ == "Application":
            return (f"{_describe(app)} is an aiohttp.web.Application, not an ASGI app: serve "
                    "it with -k aiohttp")
        if inspect.isfunction(app) and _takes_no_arguments(app):
            return (f"{_describe(app)}() takes no arguments: an app factory, not an app; call "
                    f"it in the app spec, '{app.__module__}:{app.__qualname__}()' (as "
                    "gunicorn's MODULE:factory(); uvicorn's --factory)")
        return ("interface 'asgi' (-k asgi) needs an ASGI app: async def app(scope, receive, "
                f"send) or an object with such a __call__; got {_describe(app)}, which looks "
                "like a WSGI app (serve it with -k asyncio, gthread, ...)")
    if interface == "asgi":
        return asgi_signature_error(app)
    if interface == "wsgi" and is_asgi_app(app):
        return (f"{_describe(app)} is an ASGI app (an async callable): serve it with -k asgi "
                "(or --interface asgi on the asyncio class)")
    return ""


def _describe(app: Any) -> str:
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{getattr(app, '__module__', None) or type(app).__module__}.{name}"


class ScopeBuilder:
    """The scopes of one worker.  The common request -- origin-form target, no header name with
    "_" that could matter (a forwarder or scheme header, or any under ``--header-map`` refuse or
    dangerous) -- takes a direct path that needs no environ.  X-Forwarded-For and the listed
    scheme headers (what nginx always sends) are read there under the same rule object as the
    environ's (:class:`~appserver.forwarded.ForwardedTrust`: which peers, which hop, votes and
    conflicts), so the two paths cannot disagree; every other request goes through the environ
    (:func:`scope_from_environ`)."""

    def __init__(self, ctx: WSGIContext) -> None:
        self.ctx = ctx
        # Lower-case wire name -> the listed (upper-case) scheme header name; "" for
        # X-Forwarded-For.  The same headers build_environ watches (ctx.watched).
        self.watched: dict[bytes, str] = {
            key[5:].lower().replace("_", "-").encode("latin-1"): listed
            for key, listed in ctx.watched.items() if key.startswith("HTTP_")}
        trust = ctx.forwarded
        # Header names with "_" the direct path may drop without asking who sent them: under
        # "drop", any that is neither a forwarder header nor a listed scheme header.
        self.drops_underscored = ctx.header_map == "drop" and not trust.forward_all
        self.underscore_matters = trust.forwarder_headers | frozenset(trust.scheme_headers)
        self._believed: dict[tuple[str, bool, bytes | None, tuple[tuple[str, str], ...] | None],
                             tuple[str | None, str | None]] = {}

    def direct(self, head: RequestHead, peer: tuple[str, int] | None,
               local: tuple[str, int] | None, state: dict[str, Any] | None, *,
               is_unix: bool) -> dict[str, Any] | None:
        """The scope, or None when the request needs the environ's rules.  Raises
        ProtocolError (400) for contradictory scheme headers from a trusted peer, as the
        environ does."""
        target = head.target
        if target[:1] != b"/":
            return None
        watched = self.watched
        headers = []
        forwarded_for: list[bytes] | None = None
        scheme_lines: list[tuple[str, str]] | None = None
        for name, value in head.headers:
            lname = name.lower()
            if b"_" in lname:
                if not self.drops_underscored or \
                        lname.decode("latin-1").upper() in self.underscore_matters:
                    return None
                continue  # dropped, as the environ drops it
            if lname in watched:
                listed = watched[lname]
                if listed:
                    if scheme_lines is None:
                        scheme_lines = []
                    scheme_lines.append((listed, value.decode("latin-1")))
                elif forwarded_for is None:
                    forwarded_for = [value]
                else:
                    forwarded_for.append(value)
            headers.append((lname, value))
        client = peer
        scheme = self.ctx.scheme
        if forwarded_for is not None or scheme_lines is not None:
            # nginx sends the same values for every request of one client: the answer is
            # remembered per (peer, values) in a small table.
            peer_ip = peer[0] if peer else ""
            key = (peer_ip, is_unix, b",".join(forwarded_for) if forwarded_for else None,
                   tuple(scheme_lines) if scheme_lines else None)
            believed = self._believed.get(key)
            if believed is None:
                believed = self._believe(peer_ip, is_unix, key[2], scheme_lines)
                if len(self._believed) >= 1024:
                    self._believed.clear()
                self._believed[key] = believed
            address, proto = believed
            if address is not None:
                client = (address, 0)
            if proto is not None:
                scheme = proto
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
            "scheme": scheme,
            "path": _text(decoded),
            "raw_path": raw,
            "query_string": query,
            "root_path": _text(root),
            "headers": headers,
            "client": client,
            "server": local,
            "extensions": http_extensions(),
        }
        if state is not None:
            scope["state"] = state.copy()
        return scope

    def _believe(self, peer_ip: str, is_unix: bool, forwarded_for: bytes | None,
                 scheme_lines: list[tuple[str, str]] | None) -> tuple[str | None, str | None]:
        """(client address, scheme) that the forwarded headers establish (None: the
        connection's own stands), under the environ's rule object; ProtocolError (400) for
        contradictory scheme headers from a trusted peer."""
        trust = self.ctx.forwarded
        if not trust.allows(peer_ip, is_unix):
            return None, None
        address = None if forwarded_for is None else trust.client(forwarded_for.decode("latin-1"))
        proto = None
        if scheme_lines is not None:
            try:
                proto = trust.scheme_of(scheme_lines)
            except SchemeConflict as exc:
                raise ProtocolError(400, str(exc)) from None
        return address, proto


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
        "extensions": http_extensions(),
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


# Valid header names the apps of this worker sent (bytes -> text); bounded: they come from apps.
_names: dict[bytes, str] = {}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 9110 §5.6.2, as check_header
_BAD_VALUE = re.compile(rb"[\r\n\x00]")                 # RFC 9110 §5.5, as check_header


def start_response(response: Response, message: Message) -> None:
    """Apply an ``http.response.start`` message to ``response``: the same checks and framing
    rules as a WSGI start_response (hop-by-hop fields dropped, Connection: close honoured).
    The names and values are checked here, on the app's bytes (what ``check_header`` checks
    on text), once: ``Response.start`` is told they are."""
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
    names = _names
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ResponseError(f"header {item!r} is not a (name, value) pair of bytes") from None
        if type(name) is not bytes or type(value) is not bytes:  # noqa: E721 - no str, no subclass
            raise ResponseError(f"header {item!r}: names and values must be bytes")
        text = names.get(name)
        if text is None:
            if not _TOKEN.fullmatch(name):
                raise ResponseError(f"invalid header name {name!r}")
            text = name.decode("latin-1")
            if len(names) < 4096:
                names[name] = text
        if _BAD_VALUE.search(value):
            raise ResponseError(f"header {name!r} has CR, LF or NUL in its value")
        headers.append((text, value.decode("latin-1")))
    response.start(status, _phrases.get(status) or f"{status} ", headers, checked=True)


def check_body(message: Message) -> tuple[bytes, bool]:
    """(body, more_body) of an ``http.response.body`` message."""
    body = message.get("body", b"")
    if type(body) is bytes:  # noqa: E721 - the usual case, no copy
        return body, bool(message.get("more_body", False))
    if not isinstance(body, bytearray | memoryview):
        raise ResponseError(f"http.response.body: body must be bytes, got {type(body).__name__}")
    return bytes(body), bool(message.get("more_body", False))


# Fields a trailer section must not carry (RFC 9110 §6.5.1: framing, routing, the response's
# controls); an app that sends one has made a mistake, as with a bad header.
_NOT_TRAILERS = frozenset({b"content-length", b"transfer-encoding", b"host", b"connection",
                           b"keep-alive", b"te", b"trailer", b"upgrade", b"content-type",
                           b"content-encoding", b"content-range", b"cache-control", b"expires",
                           b"date", b"location", b"set-cookie", b"authorization"})


def trailer_lines(message: Message) -> bytes:
    """The header lines of an ``http.response.trailers`` message, checked as response headers
    are (a ResponseError for a bad name or value, or a field that may not be a trailer)."""
    raw: Iterable[Any] = message.get("headers") or ()
    out = []
    try:
        items = list(raw)
    except TypeError:
        raise ResponseError("http.response.trailers: headers must be an iterable of "
                            "(name, value) pairs") from None
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ResponseError(f"trailer {item!r} is not a (name, value) pair of bytes") from None
        if type(name) is not bytes or type(value) is not bytes:  # noqa: E721
            raise ResponseError(f"trailer {item!r}: names and values must be bytes")
        if not _TOKEN.fullmatch(name):
            raise ResponseError(f"invalid trailer name {name!r}")
        if _BAD_VALUE.search(value):
            raise ResponseError(f"trailer {name!r} has CR, LF or NUL in its value")
        if name.lower() in _NOT_TRAILERS:
            raise ResponseError(f"{name!r} may not be sent as a trailer")
        out.append(name + b": " + value + b"\r\n")
    return b"".join(out)
