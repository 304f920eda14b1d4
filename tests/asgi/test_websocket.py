"""ASGI WebSockets (the ``websocket`` scope) on ``-k asgi``, with real server processes and the
``websockets`` package's client (or a raw socket where a library would not do it): the scope,
echo of text, binary and a 1 MiB message, subprotocol and accept headers, close codes both ways,
the denials (403, and the ``websocket.http.response`` extension), the message-size limit, send
after close, Starlette and FastAPI endpoints, the connection limit, and close 1001 on a stop and
1012 on a reload, seen by the client and (as ``websocket.disconnect``) by the app.
The apps are tests/asgi/wsasgi.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from appserver.bundle.tools import find_nginx
from appserver.testing import start_stack
from tests.server.harness import Launcher, Server, wait_for
from tests.websocket.wsclient import OP_CLOSE, OP_PING, RawWebSocket, open_socket, websockets_connect

from .conftest import ENV, TRANSPORTS

FAST = ["--timeout", "5", "--graceful-timeout", "3"]
MARK = "ASGI_WS_MARK"
REPO = Path(__file__).resolve().parents[2]


def address(server: Server, transport: str) -> str:
    if transport == "unix":
        return f"unix:{server.unix_path}"
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def mark_file(module_launcher: Launcher) -> Path:
    return module_launcher.workdir / "ws-marks.txt"


@pytest.fixture(scope="module")
def server(module_launcher: Launcher, mark_file: Path) -> Server:
    return module_launcher.start("-k", "asgi", *FAST, "--websocket-max-message-size", "2MiB",
                                 app="wsasgi:app", bind="both", workers=1,
                                 env={**ENV, MARK: str(mark_file)})


def marks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_mark(path: Path, line: str, timeout: float = 5.0) -> None:
    wait_for(lambda: line in marks(path), timeout, f"{line!r} in the app's marks",
             details=lambda: "\n".join(marks(path)))


def raw_answer(server: Server, path: str) -> bytes:
    """The server's whole answer to an upgrade request on ``path`` (it closes after it)."""
    with open_socket(address(server, "tcp"), 5.0) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_echo_text_binary_and_a_mib(server: Server, transport: str) -> None:
    with websockets_connect(address(server, transport), "/echo", subprotocols=["x", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response is not None and ws.response.headers["x-extra"] == "yes"
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"
        big = os.urandom(1 << 20)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("")
        assert ws.recv(timeout=5) == ""


def test_scope(server: Server) -> None:
    with websockets_connect(address(server, "tcp"), "/scope?a=1&b=%20",
                            additional_headers={"X_Real_Ip": "6.6.6.6", "X-Real-Ip": "1.2.3.4"},
                            subprotocols=["one", "two"]) as ws:
        scope = json.loads(ws.recv(timeout=5))
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (scope["http_version"], scope["scheme"]) == ("1.1", "ws")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/scope", "/scope",
                                                                          "a=1&b=%20")
    assert scope["root_path"] == "" and "method" not in scope
    assert scope["subprotocols"] == ["one", "two"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert ["x-real-ip", "1.2.3.4"] in scope["headers"]
    assert not any("_" in name for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"]["started"] == "yes"
    # A trusted peer's forwarded scheme makes it wss.
    with websockets_connect(address(server, "tcp"), "/scope",
                            additional_headers={"X-Forwarded-Proto": "https",
                                                "X-Forwarded-For": "203.0.113.9"}) as ws:
        scope = json.loads(ws.recv(timeout=5))
    assert scope["scheme"] == "wss" and scope["client"] == ["203.0.113.9", 0]


def test_close_codes_both_ways(server: Server, mark_file: Path) -> None:
    ws = websockets_connect(address(server, "tcp"), "/echo")
    ws.close(4000, "client bye")
    wait_mark(mark_file, "/echo disconnect 4000 client bye")
    ws = websockets_connect(address(server, "tcp"), "/echo")
    ws.send("close-me")
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    assert (ws.close_code, ws.close_reason) == (4001, "bye")
    wait_mark(mark_file, "/echo disconnect 4001 bye")


def test_denials(server: Server) -> None:
    answer = raw_answer(server, "/deny")
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    answer = raw_answer(server, "/deny-custom")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 418 "), answer
    assert b"\r\nx-why: teapot" in head.lower()
    assert body == b"b\r\nno sockets \r\n7\r\nfor you\r\n0\r\n\r\n"  # chunked: no length
    answer = raw_answer(server, "/nothing")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert server.get("/").status == 200  # HTTP still served alongside


def test_message_too_big_is_1009(server: Server, mark_file: Path) -> None:
    ws = websockets_connect(address(server, "tcp"), "/echo")
    ws.send(b"x" * (3 << 20))
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    assert ws.close_code == 1009
    wait_mark(mark_file, "/echo disconnect 1009 frame with 3145728 bytes exceeds limit of 2097152 bytes")


def test_send_after_close_raises_an_oserror(server: Server, mark_file: Path) -> None:
    ws = websockets_connect(address(server, "tcp"), "/after-close")
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    assert ws.close_code == 1000
    wait_mark(mark_file, "/after-close oserror ClientDisconnected")


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_framework_echo(server: Server, mark_file: Path, framework: str) -> None:
    with websockets_connect(address(server, "unix"), f"/{framework}") as ws:
        for text in ("one", "two"):
            ws.send(text)
            assert ws.recv(timeout=5) == f"{framework}: {text}"
    wait_mark(mark_file, f"/{framework} disconnect 1000")


def _hold(server: Server, count: int) -> list[ClientConnection]:
    return [websockets_connect(address(server, "tcp"), "/hold") for _ in range(count)]


def _closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=8)
    return ws.close_code, ws.close_reason


def test_term_sends_1001_and_the_limit_refuses(launcher: Launcher, workdir: Path) -> None:
    mark = workdir / "marks.txt"
    server = launcher.start("-k", "asgi", *FAST, "--websocket-max-connections", "2",
                            app="wsasgi:app", bind="tcp", workers=1, env={**ENV, MARK: str(mark)})
    sockets = _hold(server, 2)
    answer = raw_answer(server, "/hold")
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    server.signal(signal.SIGTERM)
    for ws in sockets:
        assert _closed_with(ws) == (1001, "going away")
    assert server.wait_exit(10) == 0
    assert marks(mark).count("/hold disconnect 1001 going away") == 2


def test_hup_sends_1012(launcher: Launcher, workdir: Path) -> None:
    mark = workdir / "marks.txt"
    server = launcher.start("-k", "asgi", *FAST, app="wsasgi:app", bind="tcp", workers=1,
                            env={**ENV, MARK: str(mark)})
    sockets = _hold(server, 2)
    server.signal(signal.SIGHUP)
    for ws in sockets:
        assert _closed_with(ws) == (1012, "service restart")
    # Both apps see the disconnect (each writes its mark when it gets to run).
    wait_for(lambda: marks(mark).count("/hold disconnect 1012 service restart") == 2, 10,
             "both apps' disconnect marks", details=lambda: "\n".join(marks(mark)))
    # The new generation serves WebSockets.
    wait_for(lambda: _echo_ok(server), 10, "an echo from the new worker")


def _echo_ok(server: Server) -> bool:
    try:
        with websockets_connect(address(server, "tcp"), "/echo") as ws:
            ws.send("again")
            return ws.recv(timeout=5) == "again"
    except (OSError, ConnectionClosed):
        return False


def test_unix_socket_client_is_none(server: Server) -> None:
    with websockets_connect(address(server, "unix"), "/scope") as ws:
        scope = json.loads(ws.recv(timeout=5))
    assert scope["client"] is None and scope["server"] is None




def test_through_the_bundles_nginx(tmp_path: Path) -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    settings = {"app": {"interface": "asgi"}, "server": {"workers": 1},
                "nginx": {"websocket_locations": ["/starlette"]}}
    with start_stack("tests.asgi.wsasgi:app", directory=REPO, settings=settings,
                     run_dir=tmp_path) as stack:
        url = stack.url.replace("http://", "ws://")
        with connect(f"{url}/starlette", open_timeout=10) as ws:
            for text in ("one", "two"):
                ws.send(text)
                assert ws.recv(10) == f"starlette: {text}"
        stopped = stack.stop()
        assert stopped.graceful, stack.log()


def test_pings_and_the_idle_limit(launcher: Launcher, workdir: Path) -> None:
    """The registry's keep-alive, as on the WSGI classes: a peer that never answers a ping is
    failed with 1011 (after two intervals, before the idle limit); one that answers pings but
    says nothing is closed 1000 "idle timeout"; the app hears both.  The idle limit is five
    intervals: at 2.5 (1.5 s), a ping sent a tick late and its timeout checked a tick late met
    the idle close first on a loaded machine (the pure build's pass, 2026-12-03)."""
    mark = workdir / "marks.txt"
    server = launcher.start("-k", "asgi", *FAST, "--websocket-ping-interval", "0.6",
                            "--websocket-idle-timeout", "3.0", app="wsasgi:app", bind="tcp",
                            workers=1, env={**ENV, MARK: str(mark)})
    idle = websockets_connect(address(server, "tcp"), "/hold")  # its client answers pings
    with RawWebSocket(address(server, "tcp"), "/hold") as deaf:  # never answers a ping
        assert deaf.recv_frame(timeout=5).opcode == OP_PING
        assert deaf.recv_until(OP_CLOSE, timeout=5).close == (1011, "keepalive ping timeout")
    assert _closed_with(idle) == (1000, "idle timeout")
    wait_mark(mark, "/hold disconnect 1000 idle timeout")
    wait_mark(mark, "/hold disconnect 1011 keepalive ping timeout")
