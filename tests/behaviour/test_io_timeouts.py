"""Body reads and response writes that make no progress for ``--header-timeout`` end the
connection, on every transport -- straight to the server's socket, no nginx in front.

The blocking classes' connections (sync, gthread) make every socket call with ``MSG_DONTWAIT``
and wait in ``poll`` only when the kernel has nothing for them (``workers/pump.py``), so these
timeouts are enforced by that code rather than by CPython's socket timeout: a stalled client
must still be dropped, a slow one that keeps making progress must not be.  The suite's servers
run with ``--header-timeout 1.5``.
"""

from __future__ import annotations

import socket
import time

from .client import Client, exchange
from .conftest import RunningServer

HEADER_TIMEOUT = 1.5  # tests/behaviour/conftest.py
NEVER_READ = 256 * 1024 * 1024  # far more than any socket buffer holds


def _connect(address: str, rcvbuf: int | None = None) -> socket.socket:
    """A client socket, its receive buffer made small before connecting (TCP's window)."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        target: str | tuple[str, int] = address[5:]
    else:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET)
        target = (host, int(port))
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(target)
    return sock


def _read_all(sock: socket.socket, limit_s: float) -> tuple[int, bool]:
    """Read until EOF (or a reset): (bytes read, whether the connection ended in time)."""
    total = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return total, False
        except ConnectionResetError:
            return total, True
        if not data:
            return total, True
        total += len(data)
    return total, False


def test_stalled_request_body_ends_the_connection(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        started = time.monotonic()
        # The worker is held by this request (sync): another one serves meanwhile.
        assert exchange(server.address, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
        rest = client.raw_until_close(timeout=HEADER_TIMEOUT + 6)
        elapsed = time.monotonic() - started
    assert b" 200 " not in rest, rest[:200]
    assert HEADER_TIMEOUT - 0.3 < elapsed < HEADER_TIMEOUT + 5, elapsed


def test_clients_that_never_read_are_dropped(server: RunningServer) -> None:
    # A body sent with send() and one sent with sendfile (wsgi.file_wrapper; no socket flag
    # makes sendfile non-blocking), both to clients that never read: the socket buffers fill,
    # then no progress -- the server must give up on both, and serve others meanwhile.
    file_size = 64 * 1024 * 1024
    body = _connect(server.address, rcvbuf=64 * 1024)
    file = _connect(server.address, rcvbuf=64 * 1024)
    try:
        body.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % NEVER_READ)
        file.sendall(b"GET /file?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % file_size)
        time.sleep(HEADER_TIMEOUT + 2.5)
        assert exchange(server.address, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").status == 200
        body_read, body_ended = _read_all(body, 10)
        file_read, file_ended = _read_all(file, 10)
    finally:
        body.close()
        file.close()
    assert body_ended, "the server kept the connection of a client that stopped reading"
    assert body_read < NEVER_READ // 4, body_read
    assert file_ended, "the server kept the connection of a client that stopped reading a file"
    assert file_read < file_size // 2, file_read


def test_slow_reader_that_keeps_reading_gets_everything(server: RunningServer) -> None:
    # The timeout is per wait without progress, not for the whole response: this one takes
    # over twice --header-timeout to read.
    size = 3 * 1024 * 1024
    sock = _connect(server.address, rcvbuf=64 * 1024)
    try:
        sock.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % size)
        received = 0
        started = time.monotonic()
        while True:
            data = sock.recv(64 * 1024)
            if not data:
                break
            received += len(data)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert received > size, received  # the head and every byte of the body
    assert elapsed > HEADER_TIMEOUT, elapsed  # slow enough to have outlived one timeout
