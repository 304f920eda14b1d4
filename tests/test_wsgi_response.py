"""appserver.wsgi, part 2: start_response and response framing (PEP 3333, RFC 9112 §6), run
end to end without sockets: request bytes -> RequestParser -> environ -> app (in wsgiref.validate
where the app is well-behaved) -> Response/write_body -> bytes, parsed back with llhttp."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest

from appserver.http import NEED_DATA, Body, EndOfMessage, RequestHead, RequestParser
from appserver.http.response import ResponseError
from appserver.wsgi import InputStream, Response, WSGIContext, build_environ, closing, write_body

from .http.responses import Parsed

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Exchange:
    """One request through the WSGI glue; ``raw`` is everything the client would receive."""

    def __init__(self, app: App, request: bytes, *, validate: bool = True) -> None:
        parser = RequestParser()
        parser.feed(request)
        head = parser.next_event()
        assert isinstance(head, RequestHead)

        def pull() -> bytes:
            event = parser.next_event()
            if isinstance(event, Body):
                return event.data
            assert isinstance(event, EndOfMessage) or event is NEED_DATA
            return b""

        self.sent: list[bytes] = []
        ctx = WSGIContext(multithread=False, multiprocess=True, trusted_ips=[])
        environ = build_environ(ctx, head, InputStream(pull), peer=("127.0.0.1", 1), local=None,
                                is_unix=False)
        self.response = Response(self.sent.append, head.method, head.version, head.keep_alive)
        wrapped: Any = validator(app) if validate else app
        result = wrapped(environ, self.response.start_response)
        try:
            write_body(self.response, result, self.sent.append)
        finally:
            closing(result)
        self.raw = b"".join(self.sent)

    def parsed(self) -> Parsed:
        return Parsed(self.raw)

    @property
    def keep_alive(self) -> bool:
        return self.response.keep_alive


GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"
GET10_KEEP = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"


def app_returning(body: Iterable[bytes], headers: list[tuple[str, str]] | None = None,
                  status: str = "200 OK") -> App:
    typed = [] if status[:3] in ("204", "304") else [("Content-Type", "text/plain")]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, [*typed, *(headers or [])])
        return body
    return app


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


def test_content_length_from_the_app() -> None:
    ex = Exchange(app_returning(chunks(b"hel", b"lo"), [("Content-Length", "5")]), GET)
    parsed = ex.parsed()
    assert (parsed.status, parsed.body, parsed.complete) == (200, b"hello", True)
    assert parsed.header(b"Content-Length") == b"5" and parsed.header(b"Transfer-Encoding") is None
    assert parsed.header(b"Date") is not None and parsed.header(b"Connection") is None
    assert ex.keep_alive


@pytest.mark.parametrize("body", [[b"hello"], [b"hel", b"", b"lo"], (b"he", b"llo"), [b""], []])
def test_content_length_computed_for_a_list(body: list[bytes]) -> None:
    # Not through wsgiref.validate: it wraps the list in an iterator.
    ex = Exchange(app_returning(body), GET, validate=False)
    parsed = ex.parsed()
    assert parsed.header(b"Content-Length") == str(len(b"".join(body))).encode()
    assert parsed.body == b"".join(body) and parsed.complete and ex.keep_alive
    assert len(ex.sent) == 1  # one write: head and body together


def test_chunked_for_an_iterator_on_http11() -> None:
    ex = Exchange(app_returning(chunks(b"a" * 300, b"", b"bc")), GET)
    parsed = ex.parsed()
    assert parsed.header(b"Transfer-Encoding") == b"chunked"
    assert parsed.header(b"Content-Length") is None
    assert (parsed.body, parsed.complete) == (b"a" * 300 + b"bc", True)
    assert ex.raw.endswith(b"0\r\n\r\n") and ex.keep_alive


def test_the_head_waits_for_the_first_non_empty_chunk() -> None:
    # PEP 3333: headers go out with the first non-empty chunk, not at start_response.
    sent: list[bytes] = []
    sent_at_empty_chunk: list[int] = []
    response = Response(sent.append, "GET", "1.1", True)
    response.start_response("200 OK", [])

    def body() -> Iterator[bytes]:
        yield b""
        sent_at_empty_chunk.append(len(sent))
        yield b"x"

    write_body(response, body(), sent.append)
    assert sent_at_empty_chunk == [0]
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n") and sent[0].endswith(b"\r\n\r\n1\r\nx\r\n")
    assert sent[1:] == [b"0\r\n\r\n"]


def test_close_delimited_for_an_iterator_on_http10() -> None:
    ex = Exchange(app_returning(chunks(b"ab", b"cd")), GET10_KEEP)
    assert ex.raw.startswith(b"HTTP/1.0 200 OK\r\n")
    head, _, body = ex.raw.partition(b"\r\n\r\n")
    assert body == b"abcd"
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert b"\r\nConnection: close" in head and not ex.keep_alive


def test_http10_keep_alive_with_a_known_length() -> None:
    ex = Exchange(app_returning([b"abcd"]), GET10_KEEP, validate=False)
    parsed = ex.parsed()
    assert parsed.header(b"Connection") == b"keep-alive" and parsed.header(b"Content-Length") == b"4"
    assert ex.keep_alive
    ex = Exchange(app_returning([b"abcd"]), GET10, validate=False)
    assert ex.parsed().header(b"Connection") == b"close" and not ex.keep_alive


@pytest.mark.parametrize(("body", "length"), [([b"hello"], b"5"), (chunks(b"hello"), None), ([], None)])
def test_head_sends_no_body(body: Iterable[bytes], length: bytes | None) -> None:
    ex = Exchange(app_returning(body), HEAD, validate=False)
    head, _, rest = ex.raw.partition(b"\r\n\r\n")
    assert rest == b""
    assert (b"\r\nContent-Length: " + length in head) if length else (b"Content-Length" not in head)
    assert b"Transfer-Encoding" not in head and ex.keep_alive


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status: str) -> None:
    # wsgiref.validate forbids a body for these, so the app is run bare here.
    ex = Exchange(app_returning([b"ignored"], status=status), GET, validate=False)
    head, _, rest = ex.raw.partition(b"\r\n\r\n")
    assert rest == b"" and b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert ex.keep_alive


def test_204_drops_an_app_content_length_and_304_keeps_it() -> None:
    # RFC 9110 §8.6: never in a 204; a 304 may say what a 200 would have had.
    ex = Exchange(app_returning([], [("Content-Length", "0")], status="204 No Content"), GET)
    assert b"Content-Length" not in ex.raw
    ex = Exchange(app_returning([], [("Content-Length", "42")], status="304 Not Modified"), GET)
    assert b"\r\nContent-Length: 42\r\n" in ex.raw and ex.raw.endswith(b"\r\n\r\n") and ex.keep_alive


def test_body_past_content_length_is_cut_and_closes() -> None:
    ex = Exchange(app_returning(chunks(b"hel", b"lo world"), [("Content-Length", "5")]), GET,
                  validate=False)
    assert ex.raw.endswith(b"\r\n\r\nhello") and not ex.keep_alive


def test_short_body_forbids_keep_alive() -> None:
    ex = Exchange(app_returning(chunks(b"hel"), [("Content-Length", "5")]), GET, validate=False)
    assert ex.raw.endswith(b"\r\n\r\nhel") and not ex.keep_alive
    assert ex.response.bytes_sent == 3


@pytest.mark.parametrize(("value", "keep"), [("close", False), ("Close", False), ("keep-alive", True),
                                             ("Upgrade, close", False)])
def test_connection_header_from_the_app(value: str, keep: bool) -> None:
    ex = Exchange(app_returning([b"x"], [("Connection", value)]), GET, validate=False)
    parsed = ex.parsed()
    assert ex.keep_alive is keep
    assert parsed.header(b"Connection") == (None if keep else b"close")


@pytest.mark.parametrize("name", ["Keep-Alive", "Transfer-Encoding", "Upgrade", "TE", "Trailer",
                                  "Proxy-Authenticate", "Proxy-Authorization", "transfer-encoding"])
def test_hop_by_hop_headers_from_the_app_are_dropped(name: str) -> None:
    ex = Exchange(app_returning([b"body"], [(name, "x"), ("X-Kept", "y")]), GET, validate=False)
    parsed = ex.parsed()
    assert all(n.lower() != name.lower().encode() for n, _ in parsed.headers)
    assert parsed.header(b"X-Kept") == b"y" and parsed.body == b"body"


def test_repeated_identical_content_length_is_sent_once() -> None:
    ex = Exchange(app_returning([b"abc"], [("Content-Length", "3"), ("content-length", "3")]), GET,
                  validate=False)
    assert ex.parsed().header(b"Content-Length") == b"3"


@pytest.mark.parametrize("headers", [
    [("X-Split", "a\r\nSet-Cookie: evil=1")], [("X-LF", "a\nb")], [("X-NUL", "a\x00b")],
    [("Bad Name", "v")], [("Content-Length", "five")], [("Content-Length", "-1")],
    [("Content-Length", "\u00b2")], [("Content-Length", "3"), ("Content-Length", "4")],
    [("X-Euro", "\u20ac")],
])
def test_bad_headers_are_refused_before_a_byte_is_sent(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ResponseError):
        Exchange(app_returning([b"x"], headers), GET, validate=False)


@pytest.mark.parametrize("headers", [("X", "y"), [["X", "y"]], [("X",)], [("X", "y", "z")]])
def test_headers_must_be_a_list_of_pairs(headers: Any) -> None:
    response = Response(lambda data: None, "GET", "1.1", True)
    with pytest.raises(ResponseError):
        response.start_response("200 OK", headers)


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    response = Response(lambda data: None, "GET", "1.1", True)
    response.start_response("200 OK", [])
    with pytest.raises(AssertionError):
        response.start_response("500 Oops", [])


def test_exc_info_before_the_head_replaces_the_response() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html"), ("X-First", "1")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    parsed = Exchange(app, GET).parsed()
    assert (parsed.status, parsed.body, parsed.header(b"X-First")) == (500, b"sorry", None)


def test_exc_info_after_the_head_reraises_the_original() -> None:
    error = ValueError("late")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise error
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    sent: list[bytes] = []
    response = Response(sent.append, "GET", "1.1", True)
    ctx = WSGIContext(multithread=False, multiprocess=False, trusted_ips=[])
    environ = build_environ(ctx, _head(GET), InputStream(lambda: b""), peer=None, local=None, is_unix=True)
    with pytest.raises(ValueError) as info:
        write_body(response, app(environ, response.start_response), sent.append)
    assert info.value is error
    assert b"".join(sent).endswith(b"7\r\npartial\r\n")
    assert response.status == "200 OK"


def test_write_callable() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"via ")
        write(b"write, ")
        return [b"then the list"]

    ex = Exchange(app, GET)
    assert ex.parsed().body == b"via write, then the list" and ex.parsed().complete


def test_write_takes_bytes_only() -> None:
    response = Response(lambda data: None, "GET", "1.1", True)
    write = response.start_response("200 OK", [])
    with pytest.raises(ResponseError):
        write("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [[b"ok", "text"], iter([b"ok", "text"]), ["text"], [bytearray(b"x")]])
def test_body_must_be_bytes(body: Iterable[Any]) -> None:
    with pytest.raises(ResponseError):
        Exchange(app_returning(body), GET, validate=False)


def test_app_that_never_calls_start_response() -> None:
    with pytest.raises(ResponseError):
        Exchange(lambda environ, start_response: [b"x"], GET, validate=False)


def test_before_head_hook_runs_once_and_may_veto_keep_alive() -> None:
    calls: list[Response] = []
    response = Response(lambda data: None, "GET", "1.1", True)

    def veto(r: Response) -> None:
        calls.append(r)
        r.keep_alive = False

    response.before_head = veto
    response.start_response("200 OK", [])
    head = response.head(2) + response.frame(b"ok") + response.finish()
    assert calls == [response] and b"\r\nConnection: close\r\n" in head


def test_closing_calls_close_when_there_is_one() -> None:
    class Result(list[bytes]):
        closed = False

        def close(self) -> None:
            self.closed = True

    result = Result([b"x"])
    closing(result)
    assert result.closed
    closing([b"no close method"])


def test_the_app_reads_the_body_through_wsgi_input() -> None:
    def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body[::-1]]

    ex = Exchange(echo, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert ex.parsed().body == b"olleh"
    chunked = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\nh\n\r\n3\r\nllo\r\n0\r\n\r\n")

    def lines(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"|".join(environ["wsgi.input"])]

    assert Exchange(lines, chunked).parsed().body == b"h\n|llo"


def _head(raw: bytes) -> RequestHead:
    parser = RequestParser()
    parser.feed(raw)
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    return head
