"""A plain ASGI app (tests/asgi/rawasgi.py) on ``-k asgi``, straight to the server's sockets,
TCP and unix: the scope, bodies streamed both ways, http.disconnect, HEAD, errors, lifespan."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import Launcher, Server, wait_for

from .conftest import ENV, TRANSPORTS, connect

FAST = ["--timeout", "5", "--graceful-timeout", "3"]


@pytest.fixture(scope="module")
def server(module_launcher: Launcher) -> Server:
    return module_launcher.start("-k", "asgi", *FAST, app="rawasgi:app", bind="both", workers=1,
                                 env=ENV)


def get(server: Server, transport: str, path: str, method: str = "GET",
        body: Any = None, headers: dict[str, str] | None = None
        ) -> tuple[http.client.HTTPResponse, bytes]:
    conn = connect(server, transport)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_scope(server: Server, transport: str) -> None:
    response, body = get(server, transport, "/sc%6fpe?a=1&b=%20", headers={
        "X-Custom": "Value", "X_Real_Ip": "6.6.6.6", "X-Real-Ip": "1.2.3.4"})
    assert response.status == 200
    scope = json.loads(body)
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (scope["type"], scope["http_version"], scope["method"]) == ("http", "1.1", "GET")
    assert (scope["path"], scope["raw_path"]) == ("/scope", "/sc%6fpe")
    assert (scope["query_string"], scope["root_path"], scope["scheme"]) == ("a=1&b=%20", "", "http")
    headers = scope["headers"]
    assert ["x-custom", "Value"] in headers
    assert ["x-real-ip", "1.2.3.4"] in headers  # the underscore twin is dropped
    assert not any("_" in name for name, _ in headers)
    assert all(name == name.lower() for name, _ in headers)
    assert scope["state"]["started"] == "yes"
    if transport == "tcp":
        assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
        assert scope["server"] == ["127.0.0.1", server.port]
    else:
        assert scope["client"] is None


def test_forwarded_client_and_scheme_from_a_trusted_peer(server: Server) -> None:
    _, body = get(server, "tcp", "/scope", headers={"X-Forwarded-For": "203.0.113.7",
                                                    "X-Forwarded-Proto": "https"})
    scope = json.loads(body)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_one_mib_upload_read_in_chunks(server: Server, transport: str) -> None:
    data = os.urandom(1 << 20)
    response, body = get(server, transport, "/echo", "POST", body=data)
    result = json.loads(body)
    assert response.status == 200
    assert result["total"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()


def test_chunked_upload_streams_in_several_messages(server: Server) -> None:
    def pieces() -> Any:  # one chunk per write
        for _ in range(8):
            yield b"x" * 65536
            time.sleep(0.02)

    conn = connect(server, "tcp")
    try:
        conn.request("POST", "/echo", body=pieces(), encode_chunked=True)
        body = conn.getresponse().read()
    finally:
        conn.close()
    result = json.loads(body)
    assert result["total"] == 8 * 65536
    assert result["messages"] > 1  # streamed as it came, not buffered whole


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_streamed_response_is_chunked(server: Server, transport: str) -> None:
    response, body = get(server, transport, "/stream?n=5")
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert body == b"".join(b"chunk %d\n" % i for i in range(5))


def test_content_length_in_two_messages_and_keep_alive(server: Server) -> None:
    conn = connect(server, "tcp")
    try:
        for path in ("/length", "/", "/length"):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Connection") is None
            body = response.read()
        assert body == b"0123456789"
    finally:
        conn.close()


def test_head(server: Server) -> None:
    response, body = get(server, "unix", "/", "HEAD")
    assert response.status == 200 and body == b""
    assert response.getheader("Content-Type") == "text/plain"


@pytest.mark.parametrize("path", ["/raise", "/nothing"])
def test_no_response_is_a_500(server: Server, path: str) -> None:
    response, _ = get(server, "tcp", path)
    assert response.status == 500
    assert response.getheader("Connection") == "close"


def test_exception_after_the_head_cuts_the_response(server: Server) -> None:
    conn = connect(server, "tcp")
    try:
        conn.request("GET", "/raise-late")
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()
    assert get(server, "tcp", "/")[1] == b"hello"  # the worker serves on


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_going_away_mid_stream_is_seen_by_the_app(server: Server, transport: str,
                                                          tmp_path: Path) -> None:
    mark = tmp_path / "seen"
    if transport == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(server.unix_path)
    else:
        sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(5)
    sock.sendall(f"GET /stream?n=100000&mark={mark} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    while b"chunk 3" not in received:
        received += sock.recv(65536)
    sock.close()
    wait_for(lambda: mark.exists() and mark.read_text(), 5, "the app to record the disconnect")
    assert "disconnect" in mark.read_text()


def test_lifespan_shutdown_runs_on_graceful_stop(launcher: Launcher, tmp_path: Path) -> None:
    mark = tmp_path / "shutdown"
    server = launcher.start("-k", "asgi", *FAST, app="rawasgi:app", workers=1,
                            env={**ENV, "ASGI_SHUTDOWN_MARK": str(mark)})
    pid = server.workers()[0]
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert mark.read_text() == f"shutdown {pid}\n"


def test_startup_failure_stops_the_server_without_respawning(launcher: Launcher) -> None:
    server = launcher.start("-k", "asgi", *FAST, app="rawasgi:failing", workers=2, env=ENV,
                            wait=False)
    code = server.wait_exit(15)
    log = server.log()
    assert code == 4, log
    assert "ASGI lifespan startup failed: database unreachable" in log
    assert log.count("lifespan startup failed") <= 2  # one per first worker; never respawned
    assert "booted" not in log


def test_app_without_lifespan_is_served_in_auto_mode(launcher: Launcher) -> None:
    server = launcher.start("-k", "asgi", *FAST, app="rawasgi:nolifespan", workers=1, env=ENV)
    reply = server.get("/")
    assert json.loads(reply.body) == {"state": False}
    assert "does not support the ASGI lifespan protocol" in server.log()


def test_app_without_lifespan_stops_the_server_when_lifespan_is_on(launcher: Launcher) -> None:
    server = launcher.start("-k", "asgi", "--asgi-lifespan", "on", *FAST,
                            app="rawasgi:nolifespan", workers=1, env=ENV, wait=False)
    assert server.wait_exit(15) == 4
    assert "does not complete lifespan startup" in server.log()


@pytest.mark.parametrize(("options", "app", "message"), [
    (["-k", "asgi"], "rawasgi:wsgi_app", "needs an ASGI app"),
    (["-k", "sync"], "rawasgi:app", "is an ASGI app"),
    (["-k", "asyncio"], "rawasgi:app", "serve it with -k asgi"),
])
def test_an_app_of_the_wrong_kind_is_a_start_up_error(launcher: Launcher, options: list[str],
                                                     app: str, message: str) -> None:
    server = launcher.start(*options, *FAST, app=app, workers=1, env=ENV, wait=False)
    assert server.wait_exit(15) == 4
    assert message in server.log()


def test_root_path_setting(launcher: Launcher) -> None:
    server = launcher.start("-k", "asgi", "--root-path", "/api", *FAST, app="rawasgi:app",
                            workers=1, env=ENV)
    scope = json.loads(server.get("/api/scope").body)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", "/api/scope",
                                                                     "/api/scope")


def test_websocket_upgrade_to_an_http_only_app_is_a_500(server: Server) -> None:
    """The upgrade becomes a ``websocket`` scope (tests/asgi/test_websocket.py); an app that
    fails on it before accepting is answered 500 and the connection closed, as under uvicorn."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(server.unix_path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 500 ") and data.count(b"HTTP/1.1") == 1, data


def test_graceful_stop_finishes_a_stream_in_flight(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.start("-k", "asgi", *FAST, app="rawasgi:app", workers=1, env=ENV)
    conn = connect(server, "unix")
    try:
        conn.request("GET", "/stream?n=100")  # about 1 s of chunks
        response = conn.getresponse()
        assert response.read(8) == b"chunk 0\n"
        server.signal(signal.SIGTERM)
        rest = response.read()
    finally:
        conn.close()
    assert rest.endswith(b"chunk 99\n")
    assert server.wait_exit(10) == 0


def test_max_requests_recycles_the_worker(launcher: Launcher) -> None:
    server = launcher.start("-k", "asgi", "--max-requests", "5", *FAST, app="rawasgi:app",
                            workers=1, env=ENV)
    first = server.workers()
    for _ in range(12):
        wait_for(server.accepts, 10, "an answer")
    server.wait_log(r"retired: served \d+ requests", timeout=10)
    assert set(server.wait_workers(1, exclude=first)).isdisjoint(first)


def test_trailers_never_join_the_scope_headers(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /scope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: smuggled\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    scope = json.loads(data.partition(b"\r\n\r\n")[2])
    assert not any(name == "x-trailer" for name, _ in scope["headers"])


def test_lifespan_shutdown_runs_on_reload(launcher: Launcher, tmp_path: Path) -> None:
    mark = tmp_path / "shutdown"
    server = launcher.start("-k", "asgi", *FAST, app="rawasgi:app", workers=1,
                            env={**ENV, "ASGI_SHUTDOWN_MARK": str(mark)})
    old = server.workers()
    server.signal(signal.SIGHUP)
    new = server.wait_workers(1, exclude=old)
    wait_for(lambda: mark.exists() and mark.read_text(), 10, "the old worker's shutdown")
    assert mark.read_text() == f"shutdown {old[0]}\n"
    assert json.loads(server.get("/scope").body)["state"]["pid"] == new[0]
