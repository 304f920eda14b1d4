"""ASGI extensions on ``-k asgi`` (tests/asgi/extasgi.py), straight to the server's sockets:
``http.response.pathsend`` (Starlette's FileResponse and a raw app, on both loops: the kernel's
sendfile on asyncio, a copy with flow control on uvloop), response trailers (sent only for
``TE: trailers``) and ``asgi_disconnect_grace_period``."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import Launcher, Server, wait_for

from .conftest import ENV, TRANSPORTS, connect

FAST = ["--timeout", "5", "--graceful-timeout", "3", "--asgi-disconnect-grace-period", "1"]
LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(scope="module", params=LOOPS)
def server(request: pytest.FixtureRequest, module_launcher: Launcher) -> Server:
    return module_launcher.start("-k", "asgi", "--loop", request.param, *FAST, app="extasgi:app",
                                 bind="both", workers=1, env=ENV)


@pytest.fixture(scope="module")
def big_file() -> Iterator[Path]:
    path = Path(f"/tmp/ext-{os.getpid()}.bin")
    path.write_bytes(os.urandom(5 << 20))
    yield path
    path.unlink()


def raw(server: Server, request: bytes, timeout: float = 10.0) -> bytes:
    """Send ``request`` on a fresh TCP connection and read until the server closes it."""
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(request)
        out = bytearray()
        while data := sock.recv(65536):
            out += data
    return bytes(out)


def get(server: Server, transport: str, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = connect(server, transport)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def test_scope_advertises_the_extensions(server: Server) -> None:
    _, _, body = get(server, "tcp", "/extensions")
    assert json.loads(body) == {"http.response.pathsend": {}, "http.response.zerocopysend": {},
                                "http.response.trailers": {}}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_starlette_file_response_of_5_mib(server: Server, transport: str, big_file: Path) -> None:
    expected = hashlib.sha256(big_file.read_bytes()).hexdigest()
    for _ in range(2):  # warm up: imports, first buffers
        get(server, transport, f"/starlette/file?path={big_file}")
    _, _, before = get(server, transport, "/rss")
    for _ in range(5):
        status, headers, body = get(server, transport, f"/starlette/file?path={big_file}")
        assert status == 200
        assert headers["content-length"] == str(5 << 20)
        assert "transfer-encoding" not in headers
        assert hashlib.sha256(body).hexdigest() == expected
    _, _, after = get(server, transport, "/rss")
    grown = int(after) - int(before)
    assert grown < 4096, f"the worker grew by {grown} KiB over five 5 MiB files"


def test_starlette_file_head(server: Server, big_file: Path) -> None:
    status, headers, body = get(server, "tcp", f"/starlette/file?path={big_file}", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(5 << 20)


@pytest.mark.parametrize("length", [False, True])
def test_raw_pathsend(server: Server, big_file: Path, length: bool) -> None:
    query = f"/pathsend?path={big_file}" + ("&length=1" if length else "")
    status, headers, body = get(server, "unix", query)
    assert status == 200
    assert headers["content-length"] == str(5 << 20)
    assert body == big_file.read_bytes()
    status, headers, body = get(server, "unix", query, "HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(5 << 20))


def test_pathsend_keeps_the_connection(server: Server, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"0123456789")
    conn = connect(server, "tcp")
    try:
        for _ in range(3):
            conn.request("GET", f"/pathsend?path={small}")
            response = conn.getresponse()
            assert response.read() == b"0123456789"
            assert not response.will_close
    finally:
        conn.close()


def test_pathsend_of_a_relative_path_is_a_500(server: Server) -> None:
    status, _, _ = get(server, "tcp", "/pathsend-relative")
    assert status == 500


def test_trailers_sent_for_te_trailers(server: Server) -> None:
    out = raw(server, b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n"
                      b"Connection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"6\r\nhello \r\n5\r\nworld\r\n0\r\nx-checksum: abc\r\nx-more: 1\r\n\r\n"
    out = raw(server, b"GET /trailers-one HTTP/1.1\r\nHost: x\r\nTE: gzip, trailers\r\n"
                      b"Connection: close\r\n\r\n")
    assert out.endswith(b"\r\n\r\n3\r\none\r\n0\r\nx-checksum: abc\r\n\r\n")


def test_trailers_dropped_without_te_trailers(server: Server) -> None:
    out = raw(server, b"GET /trailers-one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 3" in head and body == b"one"
    out = raw(server, b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    out = raw(server, b"GET /trailers HTTP/1.0\r\nTE: trailers\r\n\r\n")
    assert out.endswith(b"\r\n\r\nhello world")


def test_trailers_keep_alive(server: Server) -> None:
    request = b"GET /trailers-one HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n"
    out = raw(server, request + request.replace(b"TE: trailers", b"Connection: close"))
    assert out.count(b"HTTP/1.1 200") == 2
    assert b"0\r\nx-checksum: abc\r\n\r\nHTTP/1.1 200" in out


def test_trailers_after_pathsend(server: Server, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"file body")
    out = raw(server, f"GET /trailers-pathsend?path={small} HTTP/1.1\r\nHost: x\r\n"
                      "TE: trailers\r\nConnection: close\r\n\r\n".encode())
    assert out.endswith(b"\r\n\r\n9\r\nfile body\r\n0\r\nx-checksum: file\r\n\r\n")


def test_an_invalid_trailer_cuts_the_response_off(server: Server) -> None:
    out = raw(server, b"GET /bad-trailer HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert out.endswith(b"1\r\nx\r\n")  # no last chunk: the client sees an incomplete response
    status, _, _ = get(server, "tcp", "/extensions")  # and the worker is fine
    assert status == 200


def test_disconnect_grace_period_cancels_the_task(server: Server, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    assert server.port is not None
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET /grace?mark={mark} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    wait_for(mark.exists, 10, "the app's task to be cancelled")
    time.sleep(0.1)
    text = mark.read_text()
    assert text.startswith("cancelled ")
    assert 0.8 <= float(text.split()[1]) < 5  # --asgi-disconnect-grace-period 1
    status, _, _ = get(server, "tcp", "/extensions")
    assert status == 200
