"""Bad input gets the right status and a closed connection, and the worker serves on."""

from __future__ import annotations

import time

import pytest

from .client import Client, exchange
from .conftest import RunningServer

H = b"Host: t\r\n"

CASES: dict[str, tuple[bytes, int]] = {
    "malformed request line": (b"GET/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    "space in target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "request line too long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    "too many headers": (b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
    "header too large": (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    "body over the limit": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (300 * 1024 * 1024), 413),
    "content-length with transfer-encoding": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "transfer-encoding with content-length": (
        b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    "differing content-lengths": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    "signed content-length": (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\na", 400),
    "transfer-encoding in HTTP/1.0": (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "unknown transfer coding": (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "no host": (b"GET /hello HTTP/1.1\r\n\r\n", 400),
    "two hosts": (b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "invalid host": (b"GET /hello HTTP/1.1\r\nHost: a b@c\r\n\r\n", 400),
    "HTTP/2.0": (b"GET /hello HTTP/2.0\r\n" + H + b"\r\n", 505),
    "HTTP/1.2": (b"GET /hello HTTP/1.2\r\n" + H + b"\r\n", 505),
    "bare LF": (b"GET /hello HTTP/1.1\n" + H + b"\n", 400),
    "obs-fold": (b"GET /hello HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    "NUL in header": (b"GET /hello HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    "bad chunk size": (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "bad chunk terminator": (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1\r\nxY0\r\n\r\n", 400),
    "unknown method": (b"BREW /hello HTTP/1.1\r\n" + H + b"\r\n", 501),
    "expectation we cannot meet": (b"POST /echo HTTP/1.1\r\n" + H + b"Expect: teapot\r\nContent-Length: 1\r\n\r\nx", 417),
    "CONNECT": (b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", 501),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request(server: RunningServer, name: str) -> None:
    data, status = CASES[name]
    with Client(server.address) as client:
        client.send(data)
        response = client.response()
        assert response.status == status, response.body
        assert response.header("connection") == "close"
        assert client.closed_by_server()
    # The worker is alive and well.
    assert exchange(server.address, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").status == 200


def test_bad_request_after_a_good_one_on_keep_alive(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/9.9\r\nHost: t\r\n\r\n")
        assert client.response().status == 200
        if server.keeps_alive:
            assert client.response().status == 505
        assert client.closed_by_server()


def test_chunked_body_over_limit_during_read(server: RunningServer) -> None:
    # The limit (256 MiB in the fixture) is enforced while the app reads a chunked body.
    with Client(server.address, timeout=60) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"a" * (1 << 20)
        chunk = b"%x\r\n%s\r\n" % (len(block), block)
        try:
            for _ in range(300):
                client.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = client.response(timeout=30)
        assert response.status == 413


def test_trickling_head_is_dropped(server: RunningServer) -> None:
    # --header-timeout 1.5: a client sending one byte every 0.3 s is cut off, others are served.
    with Client(server.address) as slow:
        started = time.monotonic()
        closed = False
        for byte in b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100:
            try:
                slow.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if server.keeps_alive:
                assert exchange(server.address, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
            time.sleep(0.3)
            if time.monotonic() - started > 4:
                break
        assert closed or slow.closed_by_server(timeout=3)
        assert time.monotonic() - started < 6


def test_app_exception_before_start_response(server: RunningServer) -> None:
    response = exchange(server.address, b"GET /raise-before HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 500
    assert b"secret-traceback-marker" not in response.body
    assert response.header("connection") == "close"
    server.process.wait_for_log("secret-traceback-marker")


def test_app_exception_inside_body(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"GET /raise-after HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = client.raw_until_close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"partial" in raw
    assert not raw.endswith(b"0\r\n\r\n")  # the chunked body is cut off, never "complete"
    server.process.wait_for_log("boom inside the body iterator")


def test_header_injection_becomes_500(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"GET /bad-header HTTP/1.1\r\nHost: t\r\n\r\n")
        raw = client.raw_until_close()
    assert raw.startswith(b"HTTP/1.1 500")
    assert b"injected" not in raw and b"never sent" not in raw
