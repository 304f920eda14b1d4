"""Request bodies the app never reads, straight to the server's sockets (no nginx in front).

A client writes the head and the body separately (``http.client`` does; so does any client that
streams an upload).  When the server answers before reading the body and then closes -- the sync
worker after every response, any class on an early 403/413, during a reload or a recycle -- the
body that is still arriving must be drained (a lingering close), or the client's write fails
(``BrokenPipeError``) or a reset destroys the response before the client reads it.  gunicorn 27's
sync and gthread lose none of these requests; neither may we, on any class, over TCP and unix.
"""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time

import pytest

from .harness import BoundedLoad, Launcher, Server, UnixHTTPConnection
from .test_master import ALL_CLASSES, FAST

SIZES = [0, 1, 4096, 65536, 300_000, 1 << 20]  # 300 kB: past what a keep-alive class drains
TRANSPORTS = ["unix", "tcp"]


@pytest.fixture(params=ALL_CLASSES)
def server(request: pytest.FixtureRequest, launcher: Launcher) -> Server:
    return launcher.start(*request.param, *FAST, bind="both", workers=2)


def connect(server: Server, transport: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    if transport == "unix":
        assert server.unix_path is not None
        return UnixHTTPConnection(server.unix_path, timeout=timeout)
    assert server.port is not None
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body=body)  # the head, then the body: two writes
    response = conn.getresponse()
    return response.status, response.read()


def raw_post(server: Server, transport: str, size: int) -> tuple[int, bytes]:
    """Head and body in two writes on a socket of our own; the response read to its end."""
    if transport == "unix":
        sock = socket.socket(socket.AF_UNIX)
        address: object = server.unix_path
    else:
        sock = socket.socket()
        address = ("127.0.0.1", server.port)
    sock.settimeout(10)
    try:
        sock.connect(address)
        sock.sendall(f"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode())
        if size:
            sock.sendall(b"b" * size)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the response head: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed in the middle of the response body"
            body += chunk
        return int(head.split()[1]), body
    finally:
        sock.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unread_bodies_lose_no_request(server: Server, transport: str) -> None:
    failures: list[str] = []
    conn = connect(server, transport)
    rounds = [(size, 3) for size in SIZES] + [(4096, 150)]  # 4 KiB: the reported case
    try:
        for size, count in rounds:
            for _ in range(count):
                try:
                    status, body = post(conn, "/ignore", b"a" * size)
                    if status != 200 or not body.startswith(b"pid="):
                        failures.append(f"{size} B: {status} {body[:60]!r}")
                except OSError as exc:  # BrokenPipeError, ConnectionResetError, ...
                    failures.append(f"{size} B with http.client: {exc!r}")
                    conn.close()
        for size in SIZES:
            for _ in range(3):
                try:
                    status, body = raw_post(server, transport, size)
                    if status != 200 or not body.startswith(b"pid="):
                        failures.append(f"{size} B raw: {status} {body[:60]!r}")
                except (OSError, AssertionError) as exc:
                    failures.append(f"{size} B raw: {exc!r}")
    finally:
        conn.close()
    total = sum(count for _, count in rounds) + 3 * len(SIZES)
    assert not failures, f"{len(failures)} of {total} requests failed: {failures[:5]}"
    assert server.get().status == 200  # and the workers are fine


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_early_403_for_an_unread_upload_reaches_the_client(server: Server, transport: str) -> None:
    conn = connect(server, transport, timeout=30)
    try:
        status, body = post(conn, "/forbidden", b"u" * (20 << 20))
    finally:
        conn.close()
    assert (status, body) == (403, b"no.\n")


class UnreadLoad(BoundedLoad):
    """Clients on both transports that POST 4 KiB bodies the app never reads, reusing their
    connection (http.client reconnects when a response says Connection: close)."""

    def __init__(self, server: Server, *, threads: int = 4, limit: int = 500_000,
                 deadline: float = 60.0) -> None:
        self.server = server
        self.ok = 0
        self.failures: list[str] = []
        super().__init__(threads=threads, limit=limit, deadline=deadline, name="unread")

    @property
    def done(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)

    def _run(self, index: int) -> None:
        transport = TRANSPORTS[index % 2]
        conn = connect(self.server, transport)
        while self._take():
            try:
                status, body = post(conn, "/ignore", b"s" * 4096)
                if status != 200 or not body.startswith(b"pid="):
                    raise AssertionError(f"{status} {body[:60]!r}")
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                with self._lock:
                    self.failures.append(f"{transport}: {exc!r}")
                conn.close()
        conn.close()

    def __exit__(self, *exc: object) -> None:
        self._halt(20)

    def stop(self) -> None:
        assert self.running(), "the load ended before the storm did; raise its limit"
        self._halt(20)


def test_unread_bodies_through_a_signal_storm(server: Server) -> None:
    """HUP (reload), TTIN and TTOU (one worker more, one fewer) while clients post bodies the
    app does not read: workers stop gracefully under them, and no request fails."""
    with UnreadLoad(server) as load:
        load.wait_done(100)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGHUP, signal.SIGTTOU) * 2:
            server.signal(sig)
            time.sleep(0.4)
            load.wait_done(20, details=server.tail)
        # Let the last reload finish under load.
        time.sleep(1.0)
        load.wait_done(50, details=server.tail)
        load.stop()
    assert not load.failures, (f"{len(load.failures)} of {load.done} requests failed: "
                               f"{load.failures[:5]}\n{server.tail()}")
    assert load.ok >= 200
    assert "killed" not in server.log()


def test_a_client_that_keeps_sending_cannot_hold_a_worker(launcher: Launcher) -> None:
    """The lingering close is bounded in time: a client that streams an endless body after an
    early 403 is cut off, and the (only) sync worker serves again afterwards."""
    server = launcher.start("-k", "sync", *FAST, bind="tcp", workers=1)
    assert server.port is not None
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stop = threading.Event()
    sent = [0]

    def pump() -> None:
        try:
            while not stop.is_set():
                sent[0] += sock.send(b"z" * 65536)
        except OSError:
            pass

    started = time.monotonic()
    sock.sendall(b"POST /forbidden HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n")
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        thread.join(30)
        cut_after = time.monotonic() - started
        assert not thread.is_alive(), "the server never cut the endless upload off"
    finally:
        stop.set()
        sock.close()
    assert cut_after < 15, cut_after  # LINGER_TIME is 5 s
    assert sent[0] > 1 << 20
    assert server.get().status == 200
