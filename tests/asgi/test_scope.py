"""The pure ASGI glue (appserver/asgi.py): the direct scope path agrees with the environ path,
which owns the trust and header rules; app kinds; response-start checks."""

from __future__ import annotations

from typing import Any

import pytest

from appserver.asgi import ScopeBuilder, app_kind_error, is_asgi_app, scope_from_environ, start_response
from appserver.http.events import RequestHead
from appserver.http.parser import RequestParser
from appserver.http.response import ResponseError
from appserver.wsgi import InputStream, Response, WSGIContext, build_environ

PEER = ("127.0.0.1", 40000)
LOCAL = ("127.0.0.1", 8000)


def head_of(raw: bytes) -> RequestHead:
    parser = RequestParser(max_request_line=8190, max_fields=100, max_field_size=8190, max_body=0)
    parser.feed(raw)
    event = parser.next_event()
    assert isinstance(event, RequestHead)
    return event


def both(raw: bytes, ctx: WSGIContext, peer: Any = PEER) -> tuple[Any, dict[str, Any]]:
    head = head_of(raw)
    direct = ScopeBuilder(ctx).direct(head, peer, LOCAL, {"k": 1})
    environ = build_environ(ctx, head, InputStream(bytes), peer=peer, local=LOCAL, is_unix=False)
    return direct, scope_from_environ(environ, head, ctx.header_map, LOCAL, {"k": 1})


def context(root_path: str = "") -> WSGIContext:
    return WSGIContext(multithread=True, multiprocess=False, trusted_ips=["127.0.0.1"],
                       root_path=root_path)


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p%C3%A4th/x%2Fy?q=%20&r#frag HTTP/1.1\r\nHost: a:81\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    b"POST /api/items?x=1 HTTP/1.0\r\nContent-Length: 0\r\nUser-Agent: t\r\n\r\n",
    b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api HTTP/1.1\r\nHost: a\r\n\r\n",
])
@pytest.mark.parametrize("root_path", ["", "/api"])
def test_the_direct_path_agrees_with_the_environ_path(raw: bytes, root_path: str) -> None:
    direct, via_environ = both(raw, context(root_path))
    assert direct == via_environ
    assert direct is not None and direct["state"] == {"k": 1}


def test_percent_decoding_and_root_path() -> None:
    direct, _ = both(b"GET /p%C3%A4th HTTP/1.1\r\nHost: a\r\n\r\n", context("/api"))
    assert (direct["path"], direct["raw_path"], direct["root_path"]) == (
        "/api/päth", b"/api/p%C3%A4th", "/api")


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX_Real_Ip: 6.6.6.6\r\nX-Real-Ip: 1.2.3.4\r\n\r\n",
    b"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n",
])
def test_requests_with_trust_rules_take_the_environ_path(raw: bytes) -> None:
    direct, scope = both(raw, context())
    assert direct is None
    assert all(b"_" not in name for name, _ in scope["headers"])
    if b"X-Forwarded-For" in raw:
        assert scope["client"] == ("203.0.113.9", 0)
    if b"Proto" in raw:
        assert scope["scheme"] == "https"
    if raw.startswith(b"GET http"):
        assert (b"host", b"b.example") in scope["headers"]
        assert (scope["path"], scope["query_string"]) == ("/x", b"y")


def test_untrusted_peer_keeps_its_address() -> None:
    _, scope = both(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
                    context(), peer=("10.0.0.5", 1234))
    assert scope["client"] == ("10.0.0.5", 1234)


async def asgi_function(scope: Any, receive: Any, send: Any) -> None:
    pass


class ASGIClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


def test_app_kinds() -> None:
    assert is_asgi_app(asgi_function) and is_asgi_app(ASGIClass())
    assert not is_asgi_app(wsgi_function)
    assert app_kind_error(asgi_function, "asgi") == app_kind_error(wsgi_function, "wsgi") == ""
    assert "-k asgi" in app_kind_error(ASGIClass(), "wsgi")
    assert "needs an ASGI app" in app_kind_error(wsgi_function, "asgi")


@pytest.mark.parametrize("message", [
    {"type": "http.response.start", "status": "200"},
    {"type": "http.response.start", "status": 42},
    {"type": "http.response.start", "status": 200, "headers": [("x", "str")]},
    {"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb: c")]},
    {"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"v")]},
    {"type": "http.response.start", "status": 200, "headers": [(b"x",)]},
    {"type": "http.response.start", "status": 200, "headers": 1},  # not iterable (was TypeError)
])
def test_bad_response_starts_are_errors(message: dict[str, Any]) -> None:
    with pytest.raises(ResponseError):
        start_response(Response(lambda b: None, "GET", "1.1", True), message)


def test_response_start_uses_the_wsgi_framing() -> None:
    response = Response(lambda b: None, "GET", "1.1", True)
    start_response(response, {"type": "http.response.start", "status": 299,
                              "headers": [(b"connection", b"close"), (b"x-a", b"1")]})
    assert response.status == "299 " and not response.keep_alive
    assert response.headers == [("x-a", "1")]
