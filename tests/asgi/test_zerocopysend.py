"""``http.response.zerocopysend`` on ``-k asgi`` (tests/asgi/sendasgi.py), straight to the
server's sockets, on both loops (the kernel's sendfile on asyncio, a copy with flow control on
uvloop): offsets and counts, the file's own position, a lone message's Content-Length, chunked
framing mixed with body messages, the app's Content-Length, HEAD, bad messages, and a client
that goes away in the middle of the file.  And ``http.response.pathsend``, which shares the
sending code: its open() and fstat() run off the loop (a FIFO without a writer, whose open()
blocks, does not stop the worker answering others)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import Launcher, Server, wait_for

from .conftest import ENV, TRANSPORTS

FAST = ["--timeout", "5", "--graceful-timeout", "3", "--asgi-disconnect-grace-period", "1"]
LOOPS = ["asyncio", "uvloop"]
SIZE = 300_000


@pytest.fixture(scope="module", params=LOOPS)
def server(request: pytest.FixtureRequest, module_launcher: Launcher) -> Server:
    return module_launcher.start("-k", "asgi", "--loop", request.param, *FAST,
                                 app="sendasgi:app", bind="both", workers=1, env=ENV)


@pytest.fixture(scope="module")
def data_file() -> Iterator[tuple[Path, bytes]]:
    path = Path(f"/tmp/zc-{os.getpid()}.bin")
    data = os.urandom(SIZE)
    path.write_bytes(data)
    yield path, data
    path.unlink()


@pytest.fixture(scope="module")
def mib_file() -> Iterator[Path]:
    path = Path(f"/tmp/zc-mib-{os.getpid()}.bin")
    path.write_bytes(os.urandom(1 << 20))
    yield path
    path.unlink()


def _open(server: Server, transport: str, timeout: float) -> socket.socket:
    if transport == "unix":
        assert server.unix_path is not None
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(server.unix_path)
        return sock
    assert server.port is not None
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def exchange(server: Server, target: str, transport: str = "tcp", method: str = "GET",
             version: str = "1.1", timeout: float = 10.0) -> tuple[bytes, bytes]:
    """(head, body as on the wire) of one request on a fresh connection, read to its close."""
    with _open(server, transport, timeout) as sock:
        sock.sendall(f"{method} {target} HTTP/{version}\r\nHost: x\r\n"
                     f"Connection: close\r\n\r\n".encode())
        out = bytearray()
        while data := sock.recv(65536):
            out += data
    head, _, body = bytes(out).partition(b"\r\n\r\n")
    return head, body


def header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode()
    return None


def test_the_scope_advertises_zerocopysend(server: Server) -> None:
    _, body = exchange(server, "/extensions")
    assert "http.response.zerocopysend" in json.loads(body)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("query", "start", "end"), [
    ("", 0, SIZE),                              # the whole file
    ("&offset=100&count=1000", 100, 1100),
    ("&offset=5000", 5000, SIZE),               # to the end
    ("&count=70000", 0, 70000),                 # from the position (0)
    ("&seek=1000", 1000, SIZE),                 # no offset: the file's position
    ("&seek=7&count=3", 7, 10),
    (f"&offset={SIZE - 10}&count=100", SIZE - 10, SIZE),  # a count past the end: what is there
    (f"&offset={SIZE + 5}", SIZE, SIZE),        # past the end: an empty body
])
def test_one_message_is_the_body_with_its_length(server: Server, data_file: tuple[Path, bytes],
                                                 transport: str, query: str, start: int,
                                                 end: int) -> None:
    path, data = data_file
    head, body = exchange(server, f"/zc?path={path}{query}", transport)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert header(head, "content-length") == str(end - start)
    assert header(head, "transfer-encoding") is None
    assert body == data[start:end]


def test_head_gets_the_length_and_no_body(server: Server, data_file: tuple[Path, bytes]) -> None:
    path, _ = data_file
    head, body = exchange(server, f"/zc?path={path}&offset=10&count=20", method="HEAD")
    assert header(head, "content-length") == "20" and body == b""


def test_the_apps_content_length_caps_the_file(server: Server,
                                               data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    head, body = exchange(server, f"/zc?path={path}&count=100&length=50")
    assert header(head, "content-length") == "50" and body == data[:50]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_more_body_mixes_with_body_messages_chunked(server: Server, transport: str,
                                                   data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    head, body = exchange(server, f"/zc-parts?path={path}", transport)
    assert header(head, "transfer-encoding") == "chunked"
    assert header(head, "content-length") is None
    # The second zerocopysend had no offset: it read on from where the first left the file.
    assert body == (b"5\r\nhead:\r\n" + b"64\r\n" + data[10:110] + b"\r\n"
                    + b"32\r\n" + data[110:160] + b"\r\n" + b"5\r\n:tail\r\n0\r\n\r\n")


def test_more_body_with_the_apps_content_length(server: Server,
                                                data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    head, body = exchange(server, f"/zc-parts?path={path}&length=160")
    assert header(head, "content-length") == "160"
    assert header(head, "transfer-encoding") is None
    assert body == b"head:" + data[10:160] + b":tail"


def test_http_1_0_is_close_delimited(server: Server, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    head, body = exchange(server, f"/zc-parts?path={path}", version="1.0")
    assert header(head, "transfer-encoding") is None and header(head, "content-length") is None
    assert body == b"head:" + data[10:160] + b":tail"


def test_keep_alive_after_zerocopysend(server: Server, data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    with _open(server, "tcp", 10.0) as sock:
        one = f"GET /zc?path={path}&count=1000 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        last = f"GET /zc-parts?path={path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sock.sendall(one + one + last.encode())
        out = bytearray()
        while chunk := sock.recv(65536):
            out += chunk
    assert out.count(b"HTTP/1.1 200") == 3
    assert out.count(data[:1000]) == 2 and out.endswith(b"5\r\n:tail\r\n0\r\n\r\n")


@pytest.mark.parametrize("what", ["nofile", "offset", "pipe"])
def test_an_invalid_message_is_an_app_error(server: Server, what: str) -> None:
    head, body = exchange(server, f"/zc-bad?what={what}")
    assert head.startswith(b"HTTP/1.1 500"), head
    assert "invalid response from the app" in server.log()


def test_a_client_that_goes_away_mid_file(server: Server, mib_file: Path,
                                          tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with _open(server, "unix", 10.0) as sock:
        sock.sendall(f"GET /zc-big?path={mib_file}&mark={mark} HTTP/1.1\r\nHost: x\r\n\r\n"
                     .encode())
        got = 0
        while got < 3 << 20:  # three of the 400 MiB, then gone
            got += len(sock.recv(1 << 20))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    began = time.monotonic()
    wait_for(mark.exists, 10, "the app's outcome", details=server.tail)
    assert mark.read_text() == "oserror ClientDisconnected"
    assert time.monotonic() - began < 5
    head, _ = exchange(server, "/extensions")  # the worker serves on
    assert head.startswith(b"HTTP/1.1 200")


def test_pathsend_opens_the_file_off_the_loop(server: Server, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    answers: list[bytes] = []
    blocked = threading.Thread(
        target=lambda: answers.append(exchange(server, f"/pathsend?path={fifo}")[0]))
    blocked.start()
    try:
        time.sleep(0.3)  # the open() of the FIFO now waits for a writer
        began = time.monotonic()
        head, _ = exchange(server, "/extensions", timeout=5)
        assert head.startswith(b"HTTP/1.1 200") and time.monotonic() - began < 2
        assert not answers
    finally:
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # lets the open() finish
        blocked.join(10)
        os.close(writer)
    assert answers and answers[0].startswith(b"HTTP/1.1 500"), answers  # not a regular file
