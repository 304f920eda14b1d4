"""Existing libraries, unchanged, on ``environ['gunicorn.socket']``: a Flask-Sock app (ends the
request with StopIteration) and a bare simple-websocket app (returns the ALREADY_HANDLED
sentinel).  The server must write nothing after them, log no error and never reuse the
connection.  (The same apps through nginx: test_nginx.py.)"""

from __future__ import annotations

import json
import os
import time

import pytest

from .conftest import Server
from .wsclient import (
    OP_CLOSE,
    OP_TEXT,
    RawWebSocket,
    close_frame_of,
    close_payload,
    encode_frame,
    websockets_connect,
    wsc_connect,
)

LIBRARY_ROUTES = ["/flask/echo", "/raw/echo"]


def recorded(server: Server, route: str, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in json.loads(server.get("/events").body) if e["route"] == route]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("path", LIBRARY_ROUTES)
def test_echo_with_both_client_libraries(server: Server, path: str) -> None:
    ws = wsc_connect(server.address, path)
    try:
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send_binary(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        big = os.urandom(1 << 20)
        ws.send_binary(big)
        assert ws.recv() == big
    finally:
        ws.close()
    with websockets_connect(server.address, path) as ws2:  # offers permessage-deflate, too
        ws2.send("from websockets")
        assert ws2.recv(timeout=10) == "from websockets"
    assert ws2.close_code == 1000


@pytest.mark.parametrize("path", LIBRARY_ROUTES)
def test_client_close_ends_the_connection_without_reuse(server: Server, path: str) -> None:
    route = path.split("/")[1]
    mark = len(server.log())  # the server is shared: judge only what this test logged
    before = len(recorded(server, route, 0))
    with RawWebSocket(server.address, path) as ws:
        ws.send(OP_TEXT, b"ping?")
        assert ws.recv_frame().payload == b"ping?"
        ws.send(OP_CLOSE, close_payload(1000))
        assert ws.recv_until(OP_CLOSE).close[0] == 1000
        # Whatever comes next on this connection is not HTTP: the server never reuses it.
        try:
            ws.sock.sendall(b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        except OSError:
            pass
        rest = ws.at_eof()
        assert rest is not None, "the connection stayed open"
        assert b"HTTP/" not in rest
    assert len(recorded(server, route, before + 1)) == before + 1
    assert server.get("/hello").status == 200
    log = server.log()[mark:]
    assert "app error" not in log and "500" not in log and "invalid response" not in log, log


def test_flask_sock_server_close_with_app_code(server: Server) -> None:
    mark = len(server.log())
    ws = wsc_connect(server.address, "/flask/echo")
    try:
        ws.send("one")
        assert ws.recv() == "one"
        ws.send("bye")
        assert close_frame_of(ws) == (4000, "flask says bye")
    finally:
        ws.close()
    assert "app error" not in server.log()[mark:]


@pytest.mark.parametrize("path", ["/flask/echo", "/raw/echo", "/native/echo"])
def test_frame_sent_with_the_handshake_is_not_lost(server: Server, path: str) -> None:
    # Bytes read together with the request head reach the library (HandedOverSocket) or the
    # native session.
    with RawWebSocket(server.address, path, early=encode_frame(OP_TEXT, b"early bird")) as ws:
        assert ws.recv_frame().payload == b"early bird"
        ws.send(OP_CLOSE, close_payload(1000))
        assert ws.recv_until(OP_CLOSE).close[0] == 1000


def test_abrupt_disconnect_is_no_error(server: Server) -> None:
    mark = len(server.log())
    for path in LIBRARY_ROUTES:
        ws = RawWebSocket(server.address, path)
        ws.send(OP_TEXT, b"x")
        ws.recv_frame()
        ws.close()  # no close frame: the library sees the connection drop
    time.sleep(0.2)
    assert server.get("/hello").status == 200
    assert "app error" not in server.log()[mark:]
