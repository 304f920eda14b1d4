"""HTTP/1.1 behaviour of every worker class over TCP and unix sockets."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

from .client import Client, exchange
from .conftest import RunningServer


def _alive(server: RunningServer) -> None:
    assert exchange(server.address, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").status == 200


def test_simple_get(server: RunningServer) -> None:
    response = exchange(server.address, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 200
    assert response.body == b"hello\n"
    assert response.header("content-length") == "6"
    assert response.header("date")
    assert response.header("server") is None  # nothing the app did not set but Date/Connection


def test_keep_alive(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.request(path="/hello")
        first = client.response()
        assert first.status == 200
        if not server.keeps_alive:
            assert first.header("connection") == "close"
            assert client.closed_by_server()
            return
        assert first.header("connection") is None
        client.request(path="/hello")
        assert client.response().body == b"hello\n"
        client.request(path="/hello", headers={"Connection": "close"})
        last = client.response()
        assert last.header("connection") == "close"
        assert client.closed_by_server()


def test_http10_closes_unless_keep_alive(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"GET /hello HTTP/1.0\r\n\r\n")
        response = client.response()
        assert response.status == 200 and response.body == b"hello\n"
        assert client.closed_by_server()
    if server.keeps_alive:
        with Client(server.address) as client:
            client.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = client.response()
            assert response.header("connection") == "keep-alive"
            client.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert client.response().status == 200


def test_pipelining_in_order(server: RunningServer) -> None:
    requests = b"".join(
        f"GET /environ?i={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(3))
    with Client(server.address) as client:
        client.send(requests)
        first = client.response()
        assert json.loads(first.body)["QUERY_STRING"] == "i=0"
        if not server.keeps_alive:
            assert client.closed_by_server()
            return
        for i in (1, 2):
            assert json.loads(client.response().body)["QUERY_STRING"] == f"i={i}"


def test_chunked_request_body(server: RunningServer) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"hello ", b"chunked ", b"world"))
    head = b"POST /echo-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    response = exchange(server.address, head + body + b"0\r\n\r\n")
    assert response.status == 200
    assert response.body == b"hello chunked world"


def test_chunked_request_with_trailers_and_extensions(server: RunningServer) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"5;name=value\r\nabcde\r\n0\r\nX-Trailer: yes\r\n\r\n"
    response = exchange(server.address, head + body)
    assert response.body == f"5 {hashlib.sha256(b'abcde').hexdigest()}".encode()


def test_chunked_response(server: RunningServer) -> None:
    response = exchange(server.address, b"GET /stream?n=4 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("content-length") is None
    assert response.body == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"


def test_http10_response_is_close_delimited(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"GET /stream?n=2 HTTP/1.0\r\n\r\n")
        raw = client.raw_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body == b"chunk 0\nchunk 1\n"


def test_concurrent_streamed_responses_on_closing_connections_arrive_whole(
        server: RunningServer) -> None:
    """Many clients at once, each a streamed body then Connection: close: every response
    arrives whole.  (The asyncio class once closed such a connection before its streamed
    pieces were written, when a batched completion overtook them: empty replies.)"""
    request = b"GET /stream?n=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    bodies: list[bytes] = []

    def client() -> None:
        for _ in range(40):
            with Client(server.address) as conn:
                conn.send(request)
                raw = conn.raw_until_close()
            bodies.append(raw.partition(b"\r\n\r\n")[2])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    whole = b"8\r\nchunk 0\n\r\n8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n0\r\n\r\n"
    assert len(bodies) == 320
    broken = [body for body in bodies if body != whole]
    assert not broken, f"{len(broken)} of 320 responses broken, e.g. {broken[0]!r}"


def test_expect_100_continue(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        interim = client.sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"hello")
        response = client.response()
        assert response.status == 200 and response.body == b"hello"


def test_expect_100_not_sent_when_app_ignores_body(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        response = client.response()
        assert response.status == 200
        # The body never announced, the connection cannot be reused safely.
        assert response.header("connection") == "close" or not server.keeps_alive


def test_head_has_no_body(server: RunningServer) -> None:
    with Client(server.address) as client:
        client.send(b"HEAD /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        raw = client.raw_until_close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 6" in head.lower()  # (ASGI apps send lower-case names)
    assert body == b""


def test_no_body_statuses(server: RunningServer) -> None:
    for code in (204, 304):
        with Client(server.address) as client:
            client.send(f"GET /status/{code} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            raw = client.raw_until_close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {code}".encode())
        assert b"Transfer-Encoding" not in head and body == b""


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_large_upload_streams(server: RunningServer) -> None:
    size = 64 * 1024 * 1024
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    workers = server.process.worker_pids()
    before = {pid: _rss_kib(pid) for pid in workers}
    with Client(server.address, timeout=60) as client:
        client.send(f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // len(block)):
            client.send(block)
            digest.update(block)
        response = client.response(timeout=60)
    assert response.body == f"{size} {digest.hexdigest()}".encode()
    growth = max(_rss_kib(pid) - before[pid] for pid in workers)
    assert growth < 16 * 1024, f"a worker grew by {growth} KiB for a 64 MiB upload"


def test_large_chunked_upload(server: RunningServer) -> None:
    block = os.urandom(300_000)
    with Client(server.address, timeout=60) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(20):
            client.send(b"%x\r\n%s\r\n" % (len(block), block))
        client.send(b"0\r\n\r\n")
        response = client.response(timeout=60)
    expected = hashlib.sha256(block * 20).hexdigest()
    assert response.body == f"{len(block) * 20} {expected}".encode()


def test_large_download(server: RunningServer) -> None:
    size = 16 * 1024 * 1024 + 7
    response = exchange(server.address, f"GET /big?n={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), 60)
    assert response.status == 200
    assert len(response.body) == size and response.header("content-length") == str(size)


def test_file_wrapper(server: RunningServer) -> None:
    size = 300_001
    response = exchange(server.address, f"GET /file?n={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    expected = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    assert response.header("content-length") == str(size)
    assert response.body == expected


def test_write_callable(server: RunningServer) -> None:
    response = exchange(server.address, b"GET /write HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.body == b"written and returned\n"


def test_readline_and_iteration(server: RunningServer) -> None:
    body = b"first line\nsecond\nthird"
    response = exchange(server.address, b"POST /lines HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body))
    assert json.loads(response.body) == {"first": "first line\n", "rest": ["second\n", "third"]}


def test_environ(server: RunningServer) -> None:
    response = exchange(server.address, b"GET /environ?x=%20y HTTP/1.1\r\nHost: example.org:8080\r\n"
                        b"X-Custom: one\r\nX-Custom: two\r\nX_Sneaky: no\r\n\r\n")
    env = json.loads(response.body)
    assert env["QUERY_STRING"] == "x=%20y"
    assert env["RAW_URI"] == "/environ?x=%20y"
    assert env["SERVER_NAME"] == "example.org" and env["SERVER_PORT"] == "8080"
    assert env["HTTP_X_CUSTOM"] == "one,two"
    assert "HTTP_X_SNEAKY" not in env
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.multithread"] is server.keeps_alive


def test_forwarded_headers_from_trusted_peer(server: RunningServer) -> None:
    # Loopback TCP peers are trusted by default; a unix-socket peer (nginx) always is.  One hop
    # is believed: the rightmost entry, the one the proxy added (tests/behaviour/test_forwarded.py).
    response = exchange(server.address, b"GET /environ HTTP/1.1\r\nHost: t\r\n"
                        b"X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n")
    env = json.loads(response.body)
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"


def test_idle_keep_alive_closed_after_timeout(server: RunningServer) -> None:
    if not server.keeps_alive:
        return
    with Client(server.address) as client:
        client.request(path="/hello")
        assert client.response().status == 200
        started = time.monotonic()
        assert client.closed_by_server(timeout=6)
        assert 1.0 < time.monotonic() - started < 5.0  # --keep-alive 2


def test_access_log_written(server: RunningServer) -> None:
    exchange(server.address, b"GET /hello?from=accesslog HTTP/1.1\r\nHost: t\r\nUser-Agent: probe/1\r\n\r\n")
    log = server.process.args[server.process.args.index("--access-logfile") + 1]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in open(log).read().splitlines() if "from=accesslog" in line]
        if lines:
            assert '"GET /hello?from=accesslog HTTP/1.1" 200 6 "-" "probe/1"' in lines[-1]
            return
        time.sleep(0.05)
    raise AssertionError("access log line missing")
