"""RequestParser on well-formed input: every case fed whole, byte by byte and with trailing data
(see ``feeding.feed_every_way``).  Bad input is in ``test_parser_errors.py``."""

from __future__ import annotations

import pytest

from appserver.http import NEED_DATA, Body, EndOfMessage, RequestHead, RequestParser

from .feeding import NEXT_HEAD, PIPELINED, Data, End, bytewise, feed_every_way, head, outcome

H = b"Host: a\r\n"
CHUNKED = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
TE_HEADERS = ((b"Host", b"a"), (b"Transfer-Encoding", b"chunked"))


def test_simple_get() -> None:
    out = feed_every_way(b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n")
    assert out.status is None
    assert out.events == [
        head(target=b"/path?q=1", host=b"example.com",
             headers=((b"Host", b"example.com"), (b"User-Agent", b"t/1"))),
        End(),
    ]


def test_header_names_keep_their_case_and_values_lose_surrounding_whitespace() -> None:
    out = feed_every_way(b"GET / HTTP/1.1\r\nhOsT:   a \t\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n")
    assert out.heads[0].headers == ((b"hOsT", b"a"), (b"X-Empty", b""), (b"X-Tab", b"a\tb"))
    assert out.heads[0].host == b"a"


def test_leading_empty_lines_before_a_request_are_ignored() -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    assert feed_every_way(b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n").events == [head(), End()]


def test_http10_closes_unless_asked_to_keep_alive() -> None:
    # The helper also checks that a pipelined request after the closing one is never parsed.
    out = feed_every_way(b"GET / HTTP/1.0\r\n\r\n")
    assert out.events == [head(version="1.0", headers=(), keep_alive=False, host=None), End()]
    out = feed_every_way(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert out.heads[0].keep_alive is True
    assert out.heads[0].host is None


def test_data_after_a_closing_request_is_ignored_not_an_error() -> None:
    # RFC 9112 §9.6: the server MUST NOT process further requests; llhttp alone calls it an error.
    for first in (b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"):
        out = outcome([first + PIPELINED + b"\x00garbage"])
        assert out.status is None
        assert len(out.heads) == 1 and out.kinds == ["head", "end"]


@pytest.mark.parametrize(("connection", "keep_alive"), [
    (b"", True),
    (b"Connection: close\r\n", False),
    (b"Connection: CLOSE\r\n", False),
    (b"Connection: foo, close\r\n", False),
    (b"Connection: Keep-Alive\r\n", True),
    (b"Connection: closed\r\n", True),  # a different token
])
def test_keep_alive_flag_http11(connection: bytes, keep_alive: bool) -> None:
    out = feed_every_way(b"GET / HTTP/1.1\r\n" + H + connection + b"\r\n")
    assert out.heads[0].keep_alive is keep_alive


def test_two_pipelined_requests_in_one_buffer() -> None:
    out = feed_every_way(b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n")
    assert out.events == [head(target=b"/1"), End(), head(target=b"/2"), End()]


def test_three_pipelined_requests_with_bodies() -> None:
    data = (b"GET /1 HTTP/1.1\r\n" + H + b"\r\n"
            b"POST /2 HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
            + CHUNKED + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    out = feed_every_way(data)
    assert [h.target for h in out.heads] == [b"/1", b"/2", b"/up"]
    assert out.bodies() == [b"", b"hello", b"abcde"]
    assert out.kinds == ["head", "end", "head", "data", "end", "head", "data", "end"]


@pytest.mark.parametrize(("value", "length"), [(b"5", 5), (b" 5 ", 5), (b"005", 5)])
def test_content_length_body(value: bytes, length: int) -> None:
    out = feed_every_way(b"POST / HTTP/1.1\r\n" + H + b"Content-Length:" + value + b"\r\n\r\nhello")
    assert out.heads[0].content_length == length
    assert out.events[1:] == [Data(b"hello"), End()]


def test_content_length_zero_has_no_body_event() -> None:
    out = feed_every_way(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n")
    assert out.heads[0].content_length == 0
    assert out.kinds == ["head", "end"]


def test_binary_body_is_passed_through_untouched() -> None:
    body = bytes(range(256)) * 4 + b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    out = feed_every_way(b"PUT /b HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert out.bodies() == [body]


@pytest.mark.parametrize("chunks", [
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"5\r\nhello\r\n6\r\n world\r\n000\r\n\r\n",
    b"0005\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"5;name=value\r\nhello\r\n6;a;b=\"quoted; \\\"string\"\r\n world\r\n0;last\r\n\r\n",
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n",
])
def test_chunked_body(chunks: bytes) -> None:
    out = feed_every_way(CHUNKED + chunks)
    assert out.events == [head("POST", b"/up", headers=TE_HEADERS, chunked=True),
                          Data(b"hello world"), End()]


def test_chunk_size_is_hex_in_either_case() -> None:
    out = feed_every_way(CHUNKED + b"a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n")
    assert out.bodies() == [b"0123456789" + b"0123456789a"]


@pytest.mark.parametrize("value", [b"chunked", b"CHUNKED", b"  chunked  "])
def test_transfer_encoding_chunked_spellings(value: bytes) -> None:
    out = feed_every_way(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:" + value + b"\r\n\r\n0\r\n\r\n")
    assert out.heads[0].chunked is True
    assert out.heads[0].content_length is None


def test_trailer_fields_never_join_the_head_already_handed_out() -> None:
    parser = RequestParser()
    parser.feed(CHUNKED)
    first = parser.next_event()
    assert isinstance(first, RequestHead)
    before = list(first.headers)
    parser.feed(b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n")
    assert first.headers == before
    assert isinstance(parser.next_event(), Body)
    assert isinstance(parser.next_event(), EndOfMessage)


@pytest.mark.parametrize(("expect", "version", "flag"), [
    (b"100-continue", "1.1", True),
    (b"100-Continue", "1.1", True),
    (b"100-continue", "1.0", False),  # RFC 9110 §10.1.1: ignored in HTTP/1.0
])
def test_expect_100_continue(expect: bytes, version: str, flag: bool) -> None:
    data = (b"POST / HTTP/%s\r\n" % version.encode() + H + b"Expect: " + expect
            + b"\r\nContent-Length: 3\r\n\r\nabc")
    out = feed_every_way(data)
    assert out.heads[0].expect_continue is flag
    assert out.bodies() == [b"abc"]


WEBSOCKET = (b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")


def test_upgrade_keeps_the_bytes_after_the_head() -> None:
    # The helper checks that any trailing data is appended to ``trailing``, never parsed.
    out = feed_every_way(WEBSOCKET + b"\x81\x85frame")
    assert out.upgraded
    assert out.trailing == b"\x81\x85frame"
    assert out.heads[0].upgrade == "websocket"
    assert out.kinds == ["head", "end"]


def test_upgrade_with_content_length_zero_is_fine() -> None:
    out = feed_every_way(WEBSOCKET[:-2] + b"Content-Length: 0\r\n\r\n")
    assert out.upgraded and out.heads[0].upgrade == "websocket"


def test_declined_upgrade_goes_on_parsing_http() -> None:
    data = WEBSOCKET + PIPELINED
    for pieces in ([data], bytewise(data)):
        out = outcome(pieces, decline=True)
        assert out.status is None and not out.upgraded
        assert out.events[2:] == [NEXT_HEAD, End()]
        assert out.heads[0].upgrade == "websocket"


def test_declined_upgrade_of_a_closing_request_parses_nothing_more() -> None:
    data = b"GET / HTTP/1.1\r\n" + H + b"Upgrade: h2c\r\nConnection: close, upgrade\r\n\r\n"
    out = outcome([data + PIPELINED], decline=True)
    assert out.status is None and out.kinds == ["head", "end"]
    assert out.heads[0].keep_alive is False


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n\r\n",  # no "Connection: upgrade"
    b"GET / HTTP/1.1\r\n" + H + b"Connection: upgrade\r\n\r\n",  # no Upgrade
    # RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request.
    b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade, keep-alive\r\n\r\n",
])
def test_upgrade_that_is_not_one(data: bytes) -> None:
    out = feed_every_way(data)
    assert not out.upgraded
    assert out.heads[0].upgrade is None
    assert out.kinds == ["head", "end"]


def test_many_ignored_upgrades_in_one_read() -> None:
    # Each ignored HTTP/1.0 Upgrade pauses llhttp; going on must not recurse once per request.
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\nUpgrade: x\r\n\r\n"
    out = outcome([request * 3000])
    assert out.status is None and len(out.heads) == 3000 and not out.upgraded


@pytest.mark.parametrize("target", [
    b"http://example.com/x?y=1", b"https://example.com:8443/", b"HTTP://EXAMPLE.COM/", b"http://a",
])
def test_absolute_form_target_is_kept_as_sent(target: bytes) -> None:
    out = feed_every_way(b"GET " + target + b" HTTP/1.1\r\nHost: other\r\n\r\n")
    assert out.heads[0].target == target
    assert out.heads[0].host == b"other"  # replacing it is the WSGI layer's job


def test_options_asterisk() -> None:
    out = feed_every_way(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n")
    assert out.events == [head("OPTIONS", b"*"), End()]


@pytest.mark.parametrize("method", [b"PATCH", b"PURGE", b"PROPFIND", b"QUERY", b"DELETE", b"HEAD"])
def test_registered_methods(method: bytes) -> None:
    out = feed_every_way(method + b" / HTTP/1.1\r\n" + H + b"\r\n")
    assert out.heads[0].method == method.decode()


@pytest.mark.parametrize("host", [b"[::1]:8080", b"[::1]", b"example.com:80", b"a:", b"",
                                  b"xn--nxasmq6b.example", b"127.0.0.1"])
def test_valid_hosts(host: bytes) -> None:
    out = feed_every_way(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert out.heads[0].host == host


def test_request_line_limit_counts_the_whole_line() -> None:
    # method SP target SP version: "GET " + target + " HTTP/1.1" is exactly 64 bytes here.
    target = b"/" + b"a" * (64 - len(b"GET  HTTP/1.1") - 1)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == 64
    assert feed_every_way(line + b"\r\n" + H + b"\r\n", max_request_line=64).heads[0].target == target
    assert feed_every_way(b"GET " + target + b"a HTTP/1.1\r\n" + H + b"\r\n",
                          max_request_line=64).status == 414


def test_field_limits_are_inclusive() -> None:
    # max_field_size counts "name: value" (name + value + 2); max_fields counts Host too.
    value = b"v" * (100 - len(b"X-Big") - 2)
    ok = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + value + b"\r\nX-3: 3\r\n\r\n"
    assert feed_every_way(ok, max_field_size=100, max_fields=3).status is None
    assert feed_every_way(ok, max_field_size=99, max_fields=3).status == 431
    assert feed_every_way(ok, max_field_size=100, max_fields=2).status == 431


def test_a_field_at_the_size_limit_trickled_byte_by_byte_is_accepted() -> None:
    value = b"v" * (8190 - len(b"X-Big") - 2)
    data = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + value + b"\r\n\r\n"
    assert outcome(bytewise(data)).heads[0].headers[1] == (b"X-Big", value)


def test_body_at_the_limit_is_accepted() -> None:
    data = b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\n0123456789"
    assert feed_every_way(data, max_body=10).bodies() == [b"0123456789"]
    assert feed_every_way(CHUNKED + b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", max_body=10).status is None


def test_next_event_and_in_message() -> None:
    parser = RequestParser()
    assert parser.next_event() is NEED_DATA and not parser.in_message
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-")
    assert parser.next_event() is NEED_DATA and parser.in_message
    parser.feed(b"Length: 2\r\n\r\nx")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.has_pending_event() and parser.in_message
    assert isinstance(parser.next_event(), Body)
    assert parser.next_event() is NEED_DATA
    parser.feed(b"y")
    assert isinstance(parser.next_event(), Body)
    assert isinstance(parser.next_event(), EndOfMessage)
    assert not parser.in_message and not parser.has_pending_event()
    parser.feed_eof()  # between requests: a clean end
