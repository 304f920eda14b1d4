"""The opening handshake (RFC 6455 §4.2), checked from a parsed request head; no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib

from ..http.events import RequestHead
from ..http.response import check_header, serialize_head

# RFC 6455 §1.3: the accept token is base64(SHA-1(key + this GUID)).
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_token(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest()).decode("ascii")


class HandshakeError(Exception):
    """Not a valid WebSocket opening handshake: answer ``status`` (with ``headers``)."""

    def __init__(self, status: int, detail: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or []


def is_websocket_request(head: RequestHead) -> bool:
    return head.upgrade is not None and "websocket" in head.upgrade


def _header_values(head: RequestHead, name: bytes) -> list[str]:
    return [value.decode("latin-1").strip() for key, value in head.headers if key.lower() == name]


def check_upgrade(head: RequestHead) -> tuple[bytes, list[str]]:
    """Validate the handshake; return the client's key and the subprotocols it offers."""
    if head.method != "GET" or head.version != "1.1":
        raise HandshakeError(400, "a WebSocket handshake is a GET request in HTTP/1.1")
    versions = _header_values(head, b"sec-websocket-version")
    if versions != ["13"]:
        raise HandshakeError(426, "unsupported WebSocket version; this server speaks 13",
                             [("Sec-WebSocket-Version", "13")])
    keys = _header_values(head, b"sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "exactly one Sec-WebSocket-Key is required")
    try:
        if len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64") from None
    offered = [item.strip() for value in _header_values(head, b"sec-websocket-protocol")
               for item in value.split(",") if item.strip()]
    return keys[0].encode("ascii"), offered


def accept_response(key: bytes, subprotocol: str | None = None,
                    headers: list[tuple[str, str]] | None = None) -> bytes:
    """The 101 response that completes the handshake (no extensions are negotiated)."""
    fields: list[tuple[str, str]] = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                     ("Sec-WebSocket-Accept", accept_token(key))]
    if subprotocol:
        fields.append(("Sec-WebSocket-Protocol", subprotocol))
    for name, value in headers or []:
        check_header(name, value)
        fields.append((name, value))
    return serialize_head("1.1", "101 Switching Protocols", fields)
