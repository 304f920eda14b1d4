"""Through real nginx over the server's unix socket, with the bundle's rendered config
(``nginx.websocket_locations``: proxy_http_version 1.1, the $connection_upgrade map, the Upgrade
header, buffering off and a read timeout above the ping interval): echo with both client
libraries, fragmentation, ping/pong, close codes and bad frames (the close code must survive
nginx), and the Flask-Sock and simple-websocket apps unchanged."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from appserver.bundle.tools import find_nginx
from appserver.testing import Stack, start_stack

from .conftest import APP, MAX_MESSAGE, REPO, WORKER_CLASSES, assert_clean_log
from .wsclient import (
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWebSocket,
    close_frame_of,
    close_payload,
    websockets_connect,
    wsc_connect,
)

ABNF = websocket.ABNF
WS_LOCATIONS = ["/native/", "/proto", "/flask/", "/raw/"]


# The server's message limit stays at its default here: see
# test_rendered_server_config_keeps_the_message_limit.
DEFAULT_MAX_MESSAGE = 16 << 20


def stack_settings(worker_class: str, **server: object) -> dict[str, Any]:
    return {"server": {"workers": 1, "worker_class": worker_class, "threads": 8,
                       "websocket_max_connections": 6, "graceful_timeout": 5,
                       "websocket_ping_interval": 5, **server},
            "nginx": {"websocket_locations": WS_LOCATIONS, "websocket_read_timeout": 30}}


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    running = start_stack(APP, directory=REPO, settings=stack_settings(request.param),
                          run_dir=tmp_path_factory.mktemp("stack"))
    try:
        yield running
    finally:
        stopped = running.stop()
    assert stopped.graceful, stopped
    assert_clean_log(running.log("appserver.log"))
    errors = [line for line in running.log("nginx-error.log").splitlines()
              if "[error]" in line or "[crit]" in line or "[alert]" in line or "[emerg]" in line]
    assert not errors, "\n".join(errors)


def address(stack: Stack) -> str:
    return stack.url.removeprefix("http://")


def test_config_is_the_websocket_one(stack: Stack) -> None:
    conf = (stack.run_dir / "nginx.conf").read_text()
    for needle in ("proxy_http_version 1.1;", "map $http_upgrade $connection_upgrade",
                   "proxy_set_header Upgrade $http_upgrade;", "proxy_buffering off;",
                   "proxy_read_timeout 30s;", f"unix:{stack.socket_path}"):
        assert needle in conf, needle


def test_echo_with_websocket_client(stack: Stack) -> None:
    ws = wsc_connect(address(stack), "/native/echo", skip_utf8_validation=True)
    try:
        ws.send("through nginx ✓")
        assert ws.recv() == "through nginx ✓"
        data = os.urandom(8 << 20)
        ws.send_binary(data)
        assert ws.recv() == data
    finally:
        ws.close()


def test_echo_with_websockets(stack: Stack) -> None:
    with websockets_connect(address(stack), "/native/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=10) == b"\x00\x01"
    assert ws.close_code == 1000


def test_fragments_and_ping(stack: Stack) -> None:
    with RawWebSocket(address(stack), "/native/echo") as ws:
        ws.send(OP_TEXT, b"frag", fin=False)
        ws.send(OP_PING, b"mid")
        ws.send(OP_CONT, b"mented", fin=True)
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (OP_PONG, b"mid")
        assert ws.recv_frame().payload == b"fragmented"


@pytest.mark.parametrize("code", [1000, 4000])
def test_close_codes_survive_nginx(stack: Stack, code: int) -> None:
    # Server-initiated (the app closes with the code)...
    ws = wsc_connect(address(stack), "/native/echo")
    try:
        ws.send(f"close {code} bye")
        assert close_frame_of(ws) == (code, "bye")
    finally:
        ws.close()
    # ...and client-initiated (the server echoes it).
    with RawWebSocket(address(stack), "/native/echo") as raw:
        raw.send(OP_CLOSE, close_payload(code, "client"))
        assert raw.recv_until(OP_CLOSE).close[0] == code
        assert raw.at_eof() is not None


@pytest.mark.parametrize(("frame", "code"), [
    ((OP_TEXT, b"unmasked", False), 1002),
    ((OP_TEXT, b"\xc3\x28 bad utf-8", True), 1007),
])
def test_bad_frames_through_nginx(stack: Stack, frame: tuple[int, bytes, bool], code: int) -> None:
    opcode, payload, mask = frame
    with RawWebSocket(address(stack), "/native/echo") as ws:
        ws.send(opcode, payload, mask=mask)
        assert ws.recv_until(OP_CLOSE).close[0] == code
        assert ws.at_eof() is not None


def test_message_too_big_through_nginx(stack: Stack) -> None:
    ws = wsc_connect(address(stack), "/native/echo", timeout=20)
    try:
        try:
            ws.send_binary(b"z" * (DEFAULT_MAX_MESSAGE + 1))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert close_frame_of(ws)[0] == 1009
    finally:
        ws.close()


def test_subprotocol_through_nginx(stack: Stack) -> None:
    ws = wsc_connect(address(stack), "/proto", subprotocols=["chat.v1"])
    try:
        assert ws.getsubprotocol() == "chat.v1"
    finally:
        ws.close()


@pytest.mark.parametrize("path", ["/flask/echo", "/raw/echo"])
def test_library_apps_through_nginx(stack: Stack, path: str) -> None:
    ws = wsc_connect(address(stack), path)
    try:
        ws.send("lib")
        assert ws.recv() == "lib"
        ws.send_binary(b"\x00bin")
        assert ws.recv() == b"\x00bin"
    finally:
        ws.close()
    with websockets_connect(address(stack), path) as ws2:
        ws2.send("second client library")
        assert ws2.recv(timeout=10) == "second client library"
    assert ws2.close_code == 1000
    with RawWebSocket(address(stack), path) as raw:
        raw.send(OP_TEXT, b"x")
        assert raw.recv_frame().payload == b"x"
        raw.send(OP_CLOSE, close_payload(1000))
        assert raw.recv_until(OP_CLOSE).close[0] == 1000
        # The library closed its socket, so nginx ends the client's connection: nothing else
        # follows.  (Reuse of the upstream connection is tested directly in test_hijack.py:
        # nginx never reuses an upgraded one.)
        assert raw.at_eof() == b""
    log = stack.log("appserver.log")
    assert "app error" not in log and "500" not in log, log


def test_flask_sock_close_code_through_nginx(stack: Stack) -> None:
    ws = wsc_connect(address(stack), "/flask/echo")
    try:
        ws.send("bye")
        assert close_frame_of(ws) == (4000, "flask says bye")
    finally:
        ws.close()


def test_plain_http_keeps_working_with_keepalive(stack: Stack) -> None:
    with requests.Session() as session:
        for _ in range(5):
            response = session.get(stack.url + "/hello", timeout=10)
            assert response.status_code == 200 and response.text == "hello\n"
    # An upgrade outside the WebSocket locations is not passed on: the app sees plain HTTP.
    response = requests.get(stack.url + "/hello", timeout=10,
                            headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert response.status_code == 200


def test_rendered_server_config_keeps_the_message_limit(tmp_path: Path) -> None:
    from appserver.bundle.render import render_local
    from appserver.config import load_config
    from appserver.testing.stack import load_stack_settings

    loaded = load_stack_settings(APP, directory=REPO, settings=stack_settings(
        "gthread", websocket_max_message_size=f"{MAX_MESSAGE // 1024}K"))
    _, files = render_local(loaded, tmp_path)
    (tmp_path / "appserver.toml").write_text(files["appserver.toml"])
    config = load_config(settings_file=str(tmp_path / "appserver.toml"), environ={})
    assert config.websocket_max_message_size == MAX_MESSAGE
