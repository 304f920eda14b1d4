"""The pure ASGI glue (appserver/asgi.py): the direct scope path agrees with the environ path,
which owns the trust and header rules; app kinds; response-start checks."""

from __future__ import annotations

from typing import Any

import pytest

from appserver.asgi import ScopeBuilder, app_kind_error, is_asgi_app, scope_from_environ, start_response
from appserver.http.events import ProtocolError, RequestHead
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


def both(raw: bytes, ctx: WSGIContext, peer: Any = PEER,
         is_unix: bool = False) -> tuple[Any, dict[str, Any]]:
    head = head_of(raw)
    direct = ScopeBuilder(ctx).direct(head, peer, LOCAL, {"k": 1}, is_unix=is_unix)
    environ = build_environ(ctx, head, InputStream(bytes), peer=peer, local=LOCAL,
                            is_unix=is_unix)
    return direct, scope_from_environ(environ, head, ctx.header_map, LOCAL, {"k": 1})


def context(root_path: str = "", **options: Any) -> WSGIContext:
    return WSGIContext(multithread=True, multiprocess=False, trusted_ips=["127.0.0.1"],
                       root_path=root_path, **options)


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


def outcome(run: Any) -> Any:
    """A path's answer: its scope, or the status of the ProtocolError it raised."""
    try:
        return run()
    except ProtocolError as exc:
        return exc.status


# Proxied requests: what nginx sends (X-Forwarded-For, X-Forwarded-Proto) and what a client may
# add to trick the rules (more entries, extra lines, a second scheme header, "_" look-alikes).
PROXIED = [
    b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n",
    b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: http\r\n",
    b"X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nX-Forwarded-Proto: http, HTTPS\r\n",
    b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.1.1.1, 203.0.113.9\r\n",
    b"X-Forwarded-For: not-an-address\r\nX-Forwarded-Proto: gopher\r\n",
    b"X-Forwarded-For: [2001:db8::1], 203.0.113.9\r\n",
    b"X-Forwarded-For: , \r\n",
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n",          # contradictory: 400
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n",
    b"X-Forwarded-Protocol: ssl\r\nX-Forwarded-Proto: http\r\n",      # contradictory: 400
    b"X-Forwarded-Proto: http, https\r\nX-Forwarded-Ssl: on\r\n",     # 400 at one hop only
    b"X-Forwarded-For: 203.0.113.9\r\nX_Real_Ip: 6.6.6.6\r\nX-Real-Ip: 1.2.3.4\r\n",
    b"X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.9\r\n",
    b"X-Forwarded-Proto: https\r\nScript_Name: /mounted\r\n",       # a forwarder header
    b"X-Forwarded-Proto: https\r\nX_Forwarded_Ssl: off\r\n",
]
PEERS = [PEER, ("10.0.0.5", 1234), None]  # trusted, untrusted, a unix-socket peer (trusted)


@pytest.mark.parametrize("extra", PROXIED)
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("hops", [1, 2])
@pytest.mark.parametrize("options", [
    {}, {"header_map": "refuse"}, {"header_map": "dangerous"},
    {"scheme_headers": {"X-Forwarded-Proto": "https", "X_Forwarded_Ssl": "on"}},
    {"forwarder_headers": ["*"]},
])
def test_proxied_requests_agree_on_both_paths(extra: bytes, peer: Any, hops: int,
                                              options: dict[str, Any]) -> None:
    """The direct path applies the trust rules itself (the same ForwardedTrust): whatever it
    answers -- a scope or a 400 -- the environ path answers too; it may only decline (None)."""
    ctx = context(forwarded_hops=hops, **options)
    raw = b"GET /x?y HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n"
    head = head_of(raw)
    is_unix = peer is None
    builder = ScopeBuilder(ctx)
    direct = outcome(lambda: builder.direct(head, peer, LOCAL, None, is_unix=is_unix))
    # Asked again (the builder remembers what forwarded values establish): the same answer.
    assert outcome(lambda: builder.direct(head, peer, LOCAL, None, is_unix=is_unix)) == direct
    via_environ = outcome(lambda: scope_from_environ(
        build_environ(ctx, head, InputStream(bytes), peer=peer, local=LOCAL, is_unix=is_unix),
        head, ctx.header_map, LOCAL, None))
    if direct is None:
        # It declines only "_" names that could matter (forwarder or scheme headers, or any
        # under refuse, dangerous or forwarder_headers "*").
        assert b"_" in extra and (options or b"Script_Name" in extra)
        return
    assert direct == via_environ


def test_proxied_requests_take_the_direct_path() -> None:
    """What nginx sends needs no environ: the client and scheme come from the believed hop."""
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n" \
          b"X-Forwarded-Proto: https\r\nX_Real_Ip: 6.6.6.6\r\n\r\n"
    direct, via_environ = both(raw, context())
    assert direct == via_environ
    assert (direct["client"], direct["scheme"]) == (("203.0.113.9", 0), "https")
    assert all(b"_" not in name for name, _ in direct["headers"])
    direct, _ = both(raw, context(forwarded_hops=2))
    assert direct["client"] == ("6.6.6.6", 0)  # hops 2: the entry two places from the right
    untrusted = ("10.0.0.5", 1234)
    direct, via_environ = both(raw, context(), peer=untrusted)
    assert direct == via_environ
    assert (direct["client"], direct["scheme"]) == (untrusted, "http")
    direct, via_environ = both(raw, context(), peer=None, is_unix=True)
    assert direct == via_environ and direct["client"] == ("203.0.113.9", 0)


def test_contradictory_scheme_headers_are_a_400_on_the_direct_path() -> None:
    head = head_of(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n"
                   b"X-Forwarded-Ssl: off\r\n\r\n")
    with pytest.raises(ProtocolError) as caught:
        ScopeBuilder(context()).direct(head, PEER, LOCAL, None, is_unix=False)
    assert caught.value.status == 400
    # From a peer nobody trusts the headers are ignored, not refused.
    scope = ScopeBuilder(context()).direct(head, ("10.0.0.5", 1), LOCAL, None, is_unix=False)
    assert scope is not None and scope["scheme"] == "http"


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: a\r\nScript_Name: /mounted\r\n\r\n",
    b"GET http://b.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n",
])
def test_requests_with_other_rules_take_the_environ_path(raw: bytes) -> None:
    direct, scope = both(raw, context())
    assert direct is None
    assert all(b"_" not in name for name, _ in scope["headers"])
    if b"Script_Name" in raw:
        assert scope["root_path"] == "/mounted"
    if raw.startswith(b"GET http"):
        assert (b"host", b"b.example") in scope["headers"]
        assert (scope["path"], scope["query_string"]) == ("/x", b"y")


def test_untrusted_peer_keeps_its_address() -> None:
    direct, scope = both(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
                         context(), peer=("10.0.0.5", 1234))
    assert direct == scope
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
