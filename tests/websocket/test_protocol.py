"""The native API (``environ['wsgi.websocket']``) over every worker class that holds connections,
over TCP and a unix socket: messages, fragmentation, ping/pong, the close handshake, bad frames,
limits, subprotocols and the handshake itself."""

from __future__ import annotations

import json
import os
import time

import pytest
import websocket

from .conftest import MAX_MESSAGE, Server
from .wsclient import (
    OP_BINARY,
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


def events(server: Server) -> list[dict[str, object]]:
    response = server.get("/events")
    assert response.status == 200
    return list(json.loads(response.body))


def wait_for_event(server: Server, expected: dict[str, object], timeout: float = 5.0) -> None:
    """The app records how a session ended just after the client saw the end: poll for it."""
    deadline = time.monotonic() + timeout
    while expected not in (seen := events(server)):
        assert time.monotonic() < deadline, f"{expected} not in {seen}"
        time.sleep(0.05)


# ---- messages -------------------------------------------------------------------------------


def test_echo_text_and_binary_with_websocket_client(server: Server) -> None:
    ws = wsc_connect(server.address, "/native/echo")
    try:
        for text in ["hello", "", "héllo wörld ✓ 🎉", "x" * 70_000]:
            ws.send(text)
            assert ws.recv() == text
        for data in [b"\x00\x01\xff", b"", os.urandom(200_000)]:
            ws.send_binary(data)
            opcode, payload = ws.recv_data()
            assert (opcode, payload) == (ABNF.OPCODE_BINARY, data)
    finally:
        ws.close()


def test_echo_with_the_websockets_package(server: Server) -> None:
    with websockets_connect(server.address, "/native/echo") as ws:
        ws.send("hello from websockets")
        assert ws.recv(timeout=10) == "hello from websockets"
        ws.send(b"\x00binary\xff")
        assert ws.recv(timeout=10) == b"\x00binary\xff"
        big = os.urandom(3 << 20)
        ws.send(big)
        assert ws.recv(timeout=10) == big
    assert ws.close_code == 1000


def test_large_message_8_mib(server: Server) -> None:
    # websocket-client's own UTF-8 check is pure Python (10 s for 8 MiB): decoding checks anyway.
    ws = wsc_connect(server.address, "/native/echo", timeout=20, skip_utf8_validation=True)
    try:
        data = os.urandom(8 << 20)
        ws.send_binary(data)
        assert ws.recv() == data
        text = "ü" * (4 << 20)  # 8 MiB of UTF-8
        ws.send(text)
        assert ws.recv() == text
    finally:
        ws.close()


def test_fragmented_messages_with_a_ping_between_fragments(server: Server) -> None:
    ws = wsc_connect(server.address, "/native/echo")
    try:
        ws.send_frame(ABNF.create_frame("frag", ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(ABNF.create_frame("men", ABNF.OPCODE_CONT, fin=0))
        ws.ping(b"in between")  # control frames may come between fragments (RFC 6455 §5.4)
        ws.send_frame(ABNF.create_frame("ted ✓".encode(), ABNF.OPCODE_CONT, fin=1))
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"in between")
        assert ws.recv() == "fragmented ✓"

        parts = [os.urandom(100_000) for _ in range(5)]
        ws.send_frame(ABNF.create_frame(parts[0], ABNF.OPCODE_BINARY, fin=0))
        for part in parts[1:-1]:
            ws.send_frame(ABNF.create_frame(part, ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame(parts[-1], ABNF.OPCODE_CONT, fin=1))
        assert ws.recv() == b"".join(parts)
    finally:
        ws.close()


def test_utf8_character_split_across_fragments(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        encoded = "€".encode()
        ws.send(OP_TEXT, encoded[:1], fin=False)
        ws.send(OP_CONT, encoded[1:], fin=True)
        frame = ws.recv_frame()
        assert (frame.opcode, frame.payload) == (OP_TEXT, encoded)


def test_client_ping_gets_a_pong_with_its_payload(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        ws.send(OP_PING, b"are you there")
        frame = ws.recv_frame()
        assert (frame.opcode, frame.payload) == (OP_PONG, b"are you there")
        ws.send(OP_TEXT, b"still works")
        assert ws.recv_frame().payload == b"still works"


# ---- the close handshake --------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 4000])
def test_client_initiated_close_is_echoed_and_seen_by_the_app(server: Server, code: int) -> None:
    tag = f"client-close-{code}"
    with RawWebSocket(server.address, f"/native/echo?{tag}") as ws:
        ws.send(OP_TEXT, b"one")
        assert ws.recv_frame().payload == b"one"
        ws.send(OP_CLOSE, close_payload(code, "client leaves"))
        assert ws.recv_frame().close[0] == code
        # The server then ends the TCP connection, with nothing else on it.
        assert ws.at_eof() == b""
    wait_for_event(server, {"route": "native", "tag": tag, "messages": 1, "close_code": code})


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4000, "app says bye")])
def test_server_initiated_close_with_a_code(server: Server, code: int, reason: str) -> None:
    ws = wsc_connect(server.address, "/native/echo")
    try:
        ws.send(f"close {code} {reason}".strip())
        assert close_frame_of(ws) == (code, reason)  # websocket-client answers the close
    finally:
        ws.close()


def test_server_close_then_eof_and_no_reuse(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        ws.send(OP_TEXT, b"close 4000 done")
        assert ws.recv_frame().close == (4000, "done")
        ws.send(OP_CLOSE, close_payload(4000))
        # A request sent now must not be answered: a WebSocket connection is never reused.
        try:
            ws.sock.sendall(b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        except OSError:
            pass
        rest = ws.at_eof()
        assert rest is not None and b"HTTP/" not in rest


def test_close_without_status_is_echoed_and_the_connection_ends(server: Server) -> None:
    # RFC 6455 §5.5.1: the reply echoes the close it received -- here, one with no status.
    with RawWebSocket(server.address, "/native/echo") as ws:
        ws.send(OP_CLOSE, b"")
        frame = ws.recv_frame()
        assert frame.opcode == OP_CLOSE and frame.payload == b""
        assert ws.at_eof() == b""


# ---- bad frames -----------------------------------------------------------------------------


def test_unmasked_client_frame_gets_1002(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        ws.send(OP_TEXT, b"unmasked", mask=False)
        assert ws.recv_until(OP_CLOSE).close[0] == 1002
        assert ws.at_eof() is not None


def test_invalid_utf8_text_gets_1007(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        ws.send(OP_TEXT, b"ok \xff\xfe not utf-8")
        assert ws.recv_until(OP_CLOSE).close[0] == 1007
        assert ws.at_eof() is not None


def test_continuation_without_a_start_gets_1002(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        ws.send(OP_CONT, b"orphan")
        assert ws.recv_until(OP_CLOSE).close[0] == 1002


def test_message_over_the_limit_gets_1009(server: Server) -> None:
    ws = wsc_connect(server.address, "/native/echo", timeout=20)
    try:
        ws.send("small")
        assert ws.recv() == "small"
        try:
            ws.send_binary(b"x" * (MAX_MESSAGE + 1))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have closed while we were still sending
        assert close_frame_of(ws)[0] == 1009
    finally:
        ws.close()


def test_fragmented_message_over_the_limit_gets_1009(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        chunk = b"y" * (1 << 20)
        ws.send(OP_BINARY, chunk, fin=False)
        try:
            for _ in range(MAX_MESSAGE // len(chunk) + 1):
                ws.send(OP_CONT, chunk, fin=False)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert ws.recv_until(OP_CLOSE).close[0] == 1009


def test_app_error_after_accept_closes_with_1011(server: Server) -> None:
    with RawWebSocket(server.address, "/native/crash") as ws:
        ws.send(OP_TEXT, b"trigger")
        assert ws.recv_until(OP_CLOSE).close[0] == 1011
    # (the traceback it logs is expected; see test_crash_is_logged)


def test_crash_is_logged(server: Server) -> None:
    with RawWebSocket(server.address, "/native/crash") as ws:
        ws.send(OP_TEXT, b"trigger")
        ws.recv_until(OP_CLOSE)
    server.process.wait_for_log(r"app error in WebSocket.* /native/crash")


# ---- subprotocols and refusals --------------------------------------------------------------


def test_subprotocol_negotiation(server: Server) -> None:
    ws = wsc_connect(server.address, "/proto", subprotocols=["chat.v1", "chat.v2"])
    try:
        assert ws.getsubprotocol() == "chat.v2"
        assert json.loads(ws.recv()) == {"offered": ["chat.v1", "chat.v2"], "chosen": "chat.v2"}
        ws.send("x")
        assert ws.recv() == "x"
    finally:
        ws.close()
    with websockets_connect(server.address, "/proto", subprotocols=["chat.v1", "other"]) as ws2:
        assert ws2.subprotocol == "chat.v1"
        assert json.loads(ws2.recv(timeout=10))["chosen"] == "chat.v1"


def test_no_common_subprotocol_means_no_header(server: Server) -> None:
    # (websocket-client refuses such an answer itself, so a raw client looks at it.)
    with RawWebSocket(server.address, "/proto", headers={"Sec-WebSocket-Protocol": "mqtt, x"}) as ws:
        assert "sec-websocket-protocol" not in ws.head.lower()
        frame = ws.recv_frame()
        assert json.loads(frame.payload) == {"offered": ["mqtt", "x"], "chosen": None}


def test_app_refuses_the_upgrade_with_plain_http(server: Server) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        wsc_connect(server.address, "/native/refuse")
    assert info.value.status_code == 403
    assert server.get("/hello").body == b"hello\n"


# ---- bad handshakes -------------------------------------------------------------------------

GOOD = {"Host": "test", "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


def handshake(server: Server, method: str = "GET", drop: str = "", **changes: str):  # type: ignore[no-untyped-def]
    from tests.behaviour.client import exchange  # noqa: PLC0415

    fields = {**GOOD, **{k.replace("_", "-"): v for k, v in changes.items()}}
    fields.pop(drop, None)
    request = f"{method} /native/echo HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return exchange(server.address, request.encode() + b"\r\n")


def test_good_raw_handshake_is_accepted(server: Server) -> None:
    with RawWebSocket(server.address, "/native/echo") as ws:
        assert ws.status_line == "HTTP/1.1 101 Switching Protocols"


def test_missing_key_is_400(server: Server) -> None:
    assert handshake(server, drop="Sec-WebSocket-Key").status == 400


def test_bad_key_is_400(server: Server) -> None:
    assert handshake(server, Sec_WebSocket_Key="c2hvcnQ=").status == 400


def test_wrong_version_is_426_with_the_supported_version(server: Server) -> None:
    response = handshake(server, Sec_WebSocket_Version="8")
    assert response.status == 426
    assert response.header("Sec-WebSocket-Version") == "13"
    assert handshake(server, drop="Sec-WebSocket-Version").status == 426


def test_post_upgrade_is_4xx(server: Server) -> None:
    response = handshake(server, method="POST", Content_Length="0")
    assert 400 <= response.status < 500
