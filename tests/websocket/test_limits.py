"""Per-worker limits and timers: --websocket-max-connections (503 beyond), the idle timeout, the
server's keep-alive pings (a peer that never answers gets 1011), a peer that never answers a close,
and the sync worker's refusal of upgrades."""

from __future__ import annotations

import json
import socket
import time

import pytest
import websocket
from websockets.exceptions import ConnectionClosed

from .conftest import ServerFactory, assert_clean_log
from .wsclient import OP_CLOSE, OP_PING, RawWebSocket, websockets_connect, wsc_connect


def test_max_connections_then_503(make_server: ServerFactory, worker_class: str) -> None:
    server = make_server("--websocket-max-connections", "2", worker_class=worker_class)
    first = wsc_connect(server.address, "/native/echo")
    second = wsc_connect(server.address, "/flask/echo")  # a hijacked socket counts too
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            wsc_connect(server.address, "/native/echo")
        assert info.value.status_code == 503
        server.process.wait_for_log(r"refused: 2 WebSockets open in this worker "
                                    r"\(--websocket-max-connections\)")
        assert server.get("/hello").status == 200  # plain HTTP is not limited
        first.send("still here")
        assert first.recv() == "still here"
    finally:
        first.close()
    # The place is free again once a WebSocket has ended.
    deadline = time.monotonic() + 5
    while True:
        try:
            third = wsc_connect(server.address, "/native/echo")
            break
        except websocket.WebSocketBadStatusException:
            assert time.monotonic() < deadline, "the limit was never released"
            time.sleep(0.05)
    third.send("x")
    assert third.recv() == "x"
    third.close()
    second.close()


def test_idle_timeout_closes_even_when_pongs_keep_coming(make_server: ServerFactory,
                                                         worker_class: str) -> None:
    # Pings every 0.3 s are answered by the client (websockets answers them by itself); they
    # are not messages, so the idle WebSocket is still closed after 1 s of silence.
    server = make_server("--websocket-idle-timeout", "1", "--websocket-ping-interval", "0.3",
                         worker_class=worker_class)
    with websockets_connect(server.address, "/native/echo") as ws:
        # Messages keep it open past the idle timeout...
        for i in range(4):
            time.sleep(0.4)
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"
        quiet_since = time.monotonic()
        # ...then silence closes it (1000, "idle timeout").
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        waited = time.monotonic() - quiet_since
    assert ws.close_code == 1000 and ws.close_reason == "idle timeout"
    assert 0.9 <= waited <= 2.5, waited
    assert_clean_log(server.log())


def test_server_pings_and_drops_a_peer_that_never_answers(make_server: ServerFactory,
                                                          worker_class: str) -> None:
    server = make_server("--websocket-ping-interval", "0.5", worker_class=worker_class)
    with RawWebSocket(server.address, "/native/hold") as ws:
        started = time.monotonic()
        ping = ws.recv_frame(timeout=5)
        assert ping.opcode == OP_PING
        assert 0.4 <= time.monotonic() - started <= 2.0
        # We never answer: within another interval the server gives up with 1011.
        close = ws.recv_until(OP_CLOSE, timeout=5)
        assert close.close == (1011, "keepalive ping timeout")
        assert ws.at_eof(timeout=5) is not None  # and it ends the TCP connection
    # A peer that answers keeps its WebSocket (the websockets package answers by itself).
    with websockets_connect(server.address, "/native/echo") as ws2:
        time.sleep(1.6)  # three intervals
        ws2.send("alive")
        assert ws2.recv(timeout=5) == "alive"


def test_peer_that_never_answers_the_idle_close_is_dropped(make_server: ServerFactory,
                                                           worker_class: str) -> None:
    # The idle close is sent by the worker's housekeeping while the app's thread waits in
    # receive(); a peer that never answers it must not hold that thread forever.
    server = make_server("--websocket-idle-timeout", "0.5", "--websocket-ping-interval", "0.5",
                         worker_class=worker_class)
    with RawWebSocket(server.address, "/native/hold") as ws:
        assert ws.recv_until(OP_CLOSE).close == (1000, "idle timeout")
        started = time.monotonic()
        assert ws.at_eof(timeout=5) is not None, "the server waits forever for the close reply"
        assert time.monotonic() - started < 2.0
    assert server.get("/hello").status == 200


def test_sync_worker_refuses_with_501_and_names_the_worker_class(make_server: ServerFactory) -> None:
    server = make_server(worker_class="sync")
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        wsc_connect(server.address, "/native/echo")
    assert info.value.status_code == 501
    line = server.process.wait_for_log("WebSocket upgrade for /native/echo refused")[0]
    assert "sync worker" in line and "-k gthread" in line
    assert server.get("/hello").body == b"hello\n"  # and the worker lives on
    assert "silent" not in server.log()


def test_a_peer_that_stops_reading_costs_neither_the_worker_nor_the_others(
        make_server: ServerFactory, worker_class: str) -> None:
    """Straight to the server's socket (no nginx buffering between): a client that handshakes and
    never reads while the app writes to it.  Its window fills and the app's send blocks; the
    server cuts that connection after a ping interval, the blocked send fails, and meanwhile the
    worker's heartbeat goes on (--timeout 2 would kill a stalled worker) and another client is
    served."""
    server = make_server("--websocket-ping-interval", "0.5", "--timeout", "2",
                         worker_class=worker_class)
    pids = server.worker_pids()
    with RawWebSocket(server.address, "/native/flood") as stalled:
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
        deadline = time.monotonic() + 15
        while True:
            ended = [e for e in json.loads(server.get("/events").body) if e["route"] == "flood"]
            if ended:
                break
            assert time.monotonic() < deadline, server.log()[-3000:]
            with websockets_connect(server.address, "/native/echo") as other:
                other.send("still here")
                assert other.recv(timeout=5) == "still here"
            time.sleep(0.3)
    assert ended[0]["failure"], ended  # the blocked send failed: the connection was cut
    time.sleep(2.5)  # past --timeout: a stalled heartbeat would have cost the worker by now
    assert server.worker_pids() == pids, server.log()[-3000:]
    assert "timeout kill" not in server.log()
