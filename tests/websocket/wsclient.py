"""Clients for the WebSocket suite.

* :func:`wsc_connect` -- the websocket-client package, over TCP or a unix socket;
* :func:`websockets_connect` -- the ``websockets`` package's sync client, likewise;
* :class:`RawWebSocket` -- a hand-made client on a bare socket, for what libraries will not do:
  unmasked frames, invalid UTF-8, never answering a ping, reading every frame as it comes.
  (Framing per RFC 6455 §5.2; only the client side, so it masks unless told not to.)
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import websocket
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _ws_connect
from websockets.sync.client import unix_connect as _ws_unix_connect

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def open_socket(address: str, timeout: float = 10.0) -> socket.socket:
    """A connected socket to ``host:port`` or ``unix:/path``."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(address[5:])
        return sock
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def ws_url(address: str, path: str) -> str:
    host = "localhost" if address.startswith("unix:") else address
    return f"ws://{host}{path}"


# ---- websocket-client -----------------------------------------------------------------------


def wsc_connect(address: str, path: str, timeout: float = 10.0, **options: Any) -> websocket.WebSocket:
    kwargs: dict[str, Any] = {"timeout": timeout, **options}
    if address.startswith("unix:"):
        kwargs["socket"] = open_socket(address, timeout)
    return websocket.create_connection(ws_url(address, path), **kwargs)


def close_frame_of(ws: websocket.WebSocket, timeout: float = 10.0) -> tuple[int | None, str]:
    """Read frames until the server's close frame arrives; its (code, reason).

    Raw frames: websocket-client's message reader answers a close frame itself, and that reply
    fails with a broken pipe when the server failed the connection and closed it at once (as
    RFC 6455 §7.1.7 has it) -- after the close frame had arrived."""
    deadline = time.monotonic() + timeout
    while True:
        ws.settimeout(max(0.05, deadline - time.monotonic()))
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            return parse_close(frame.data)
        if time.monotonic() > deadline:
            raise TimeoutError("no close frame")


def parse_close(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


# ---- websockets -----------------------------------------------------------------------------


def websockets_connect(address: str, path: str, **options: Any) -> ClientConnection:
    # legacy=True: a connection usable without "with" (websockets 17 warns otherwise).
    kwargs: dict[str, Any] = {"open_timeout": 10, "close_timeout": 5, "max_size": 32 << 20,
                              "legacy": True, "proxy": None, **options}
    if address.startswith("unix:"):
        kwargs.pop("proxy")
        return _ws_unix_connect(address[5:], ws_url(address, path), **kwargs)
    return _ws_connect(ws_url(address, path), **kwargs)


# ---- a raw client ---------------------------------------------------------------------------


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return head + key + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close(self) -> tuple[int | None, str]:
        assert self.opcode == OP_CLOSE, self
        return parse_close(self.payload)


class RawWebSocket:
    """A WebSocket client that does exactly what the test says, and nothing on its own."""

    def __init__(self, address: str, path: str, *, headers: dict[str, str] | None = None,
                 early: bytes = b"", timeout: float = 10.0) -> None:
        """``early``: bytes sent in the same write as the handshake (frames that arrive before
        the server answered it)."""
        self.sock = open_socket(address, timeout)
        self.buffer = b""
        self.eof = False
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": "test", "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **(headers or {})}
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self.sock.sendall(request.encode() + b"\r\n" + early)
        head = self._read_until(b"\r\n\r\n", timeout)
        self.head = head.decode("latin-1")
        self.status_line = head.split(b"\r\n", 1)[0].decode()
        if " 101 " not in self.status_line:
            raise ConnectionError(f"handshake refused: {head!r}")

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            self._fill(deadline)
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing from the server in time")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError("the server closed the connection")
        self.buffer += data

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, mask=mask))

    def recv_frame(self, timeout: float = 10.0) -> Frame:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 2:
            self._fill(deadline)
        first, second = self.buffer[0], self.buffer[1]
        assert not second & 0x80, "a server must not mask its frames (RFC 6455 §5.1)"
        length, offset = second & 0x7F, 2
        if length >= 126:
            offset = 4 if length == 126 else 10
            while len(self.buffer) < offset:
                self._fill(deadline)
            length = int.from_bytes(self.buffer[2:offset], "big")
        while len(self.buffer) < offset + length:
            self._fill(deadline)
        payload = self.buffer[offset:offset + length]
        self.buffer = self.buffer[offset + length:]
        return Frame(bool(first & 0x80), first & 0x0F, payload)

    def recv_until(self, opcode: int, timeout: float = 10.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if frame.opcode == opcode:
                return frame

    def at_eof(self, timeout: float = 5.0) -> bytes | None:
        """What the server sends before closing the TCP connection (None: it never closed)."""
        rest = self.buffer
        self.buffer = b""
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except ConnectionResetError:
                break
            if not data:
                break
            rest += data
        self.eof = True
        return rest

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
