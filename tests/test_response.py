"""appserver.http.response: status and header checks, head serialisation, chunks, error pages."""

from __future__ import annotations

import email.utils
import time

import pytest

from appserver.http.response import (
    CONTINUE,
    LAST_CHUNK,
    ResponseError,
    body_allowed,
    check_header,
    check_status,
    chunk,
    error_response,
    http_date,
    serialize_head,
)

from .http.responses import Parsed


@pytest.mark.parametrize(("status", "code"), [
    ("200 OK", 200), ("404 Not Found", 404), ("599 Custom", 599), ("101 Switching Protocols", 101),
    ("204 ", 204), ("418 I'm a teapot", 418),
])
def test_check_status_accepts(status: str, code: int) -> None:
    assert check_status(status) == code


@pytest.mark.parametrize("status", [
    "200", "OK", "20 OK", "2000 OK", "099 Low", " 200 OK", "200\tOK", "200 OK\r\nX: y",
    "200 OK\n", "200 O\x00K", b"200 OK", 200, None,
])
def test_check_status_rejects(status: object) -> None:
    with pytest.raises(ResponseError):
        check_status(status)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "value"), [
    ("Content-Type", "text/plain; charset=utf-8"), ("X-Empty", ""), ("X-Tab", "a\tb"),
    ("x!#$%&'*+-.^_`|~1", "v"), ("Set-Cookie", "a=b; Path=/; HttpOnly"), ("X-Latin", "caf\xe9"),
])
def test_check_header_accepts(name: str, value: str) -> None:
    check_header(name, value)


@pytest.mark.parametrize(("name", "value"), [
    ("X-Split", "a\r\nSet-Cookie: evil=1"), ("X-LF", "a\nb"), ("X-CR", "a\rb"), ("X-NUL", "a\x00b"),
    ("Bad Name", "v"), ("Bad:Name", "v"), ("", "v"), ("X-A\r\nB", "v"), ("Ünicode", "v"),
    (b"X-Bytes", "v"), ("X-Bytes", b"v"), ("X-Int", 1),
])
def test_check_header_rejects(name: object, value: object) -> None:
    with pytest.raises(ResponseError):
        check_header(name, value)  # type: ignore[arg-type]


def test_check_header_verdicts_do_not_leak_between_names() -> None:
    # The token check is cached per name; a bad name must stay bad the second time round.
    for _ in range(2):
        with pytest.raises(ResponseError):
            check_header("Bad Name", "v")
        check_header("Good-Name", "v")


@pytest.mark.parametrize(("code", "method", "allowed"), [
    (200, "GET", True), (200, "HEAD", False), (204, "GET", False), (304, "GET", False),
    (101, "GET", False), (100, "GET", False), (404, "POST", True), (205, "GET", True),
])
def test_body_allowed(code: int, method: str, allowed: bool) -> None:
    assert body_allowed(code, method) is allowed


def test_serialize_head_round_trips() -> None:
    data = serialize_head("1.1", "201 Created", [("Location", "/x"), ("Content-Length", "0")])
    assert data == b"HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"
    parsed = Parsed(data)
    assert (parsed.status, parsed.header(b"Location"), parsed.complete) == (201, b"/x", True)


def test_serialize_head_encodes_latin1_and_refuses_the_rest() -> None:
    assert b"X: caf\xe9\r\n" in serialize_head("1.0", "200 OK", [("X", "caf\xe9")])
    with pytest.raises(ResponseError):
        serialize_head("1.1", "200 OK", [("X", "\u20ac")])


@pytest.mark.parametrize("size", [1, 15, 16, 255, 4096, 65537])
def test_chunks_decode_with_llhttp(size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    head = serialize_head("1.1", "200 OK", [("Transfer-Encoding", "chunked")])
    parsed = Parsed(head + chunk(body[: size // 2 or 1]) + chunk(body[size // 2 or 1:] or b"x")
                    + LAST_CHUNK)
    assert parsed.complete
    assert parsed.body == body[: size // 2 or 1] + (body[size // 2 or 1:] or b"x")


def test_chunk_size_is_lowercase_hex() -> None:
    assert chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_http_date_is_an_rfc9110_imf_fixdate() -> None:
    value = http_date()
    assert value.endswith(" GMT") and len(value) == 29
    parsed = email.utils.parsedate_to_datetime(value)
    assert abs(parsed.timestamp() - time.time()) < 2


def test_http_date_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 0.0)
    assert http_date() == "Thu, 01 Jan 1970 00:00:00 GMT"
    monkeypatch.setattr(time, "time", lambda: 86400.5)
    assert http_date() == "Fri, 02 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("status", [400, 413, 414, 431, 500, 501, 505])
def test_error_response_is_complete_and_closes(status: int) -> None:
    data = error_response(status, "some detail")
    parsed = Parsed(data)
    assert parsed.status == status and parsed.complete
    assert parsed.header(b"Connection") == b"close" and not parsed.keep_alive
    assert parsed.header(b"Content-Length") == str(len(parsed.body)).encode()
    assert parsed.body.startswith(str(status).encode()) and b"some detail" in parsed.body


def test_error_response_detail_is_ascii_and_bounded() -> None:
    parsed = Parsed(error_response(400, "caf\u00e9 " + "x" * 2000))
    assert parsed.complete
    assert parsed.body.isascii() and b"caf? x" in parsed.body
    assert len(parsed.body) < 600
    assert error_response(400, version="1.0").startswith(b"HTTP/1.0 400 Bad Request\r\n")
