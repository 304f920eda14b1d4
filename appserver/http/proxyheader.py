"""The PROXY protocol header (HAProxy's v1 text and v2 binary forms) in front of a connection.

Design notes
------------
* Sans-I/O: :meth:`ProxyHeaderReader.feed` takes the connection's first bytes and answers "more,
  please" (None) or the bytes after the header, which go to the HTTP parser.  The header itself
  is parsed by the ``proxy-protocol`` package (``proxyprotocol``: v1, v2 with TLVs and CRC32C);
  this module only finds where the header ends, which that package leaves to its stream reader.
* gunicorn 27's rules (``proxy_protocol`` = off/v1/v2/auto): the header is optional -- a
  connection whose first bytes are not a PROXY signature is plain HTTP -- and read only at the
  start of a connection.  A header from a peer outside ``proxy_allow_ips`` is a 403 (gunicorn's
  ForbiddenProxyRequest); a malformed one a 400.  v2 LOCAL and UNKNOWN keep the real peer (a
  health check from the proxy itself), and so does a v2 header for a transport other than TCP
  (the specification lets the receiver use the real addresses; gunicorn answers 500).
* Limits: a v1 line is at most 107 bytes (the specification's own bound); a v2 header carries
  its length, at most 16 + 65535 bytes.
"""

from __future__ import annotations

import socket
from typing import Literal

from proxyprotocol import ProxyProtocol, ProxyProtocolIncompleteError
from proxyprotocol.result import ProxyResult, is_ipv4, is_ipv6
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from .events import ProtocolError

Mode = Literal["off", "v1", "v2", "auto"]
V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_LINE = 107  # "PROXY TCP6 <39> <39> 65535 65535\r\n", per the specification


class ProxyHeaderReader:
    """Reads an optional PROXY header off the start of one connection."""

    __slots__ = ("versions", "allowed", "_buffer", "result", "_v2")

    def __init__(self, mode: Mode, *, allowed: bool) -> None:
        if mode == "off":
            raise ValueError("no PROXY header is read when proxy_protocol is off")
        self.versions = {"v1": (V1_SIGNATURE,), "v2": (V2_SIGNATURE,),
                         "auto": (V2_SIGNATURE, V1_SIGNATURE)}[mode]
        self.allowed = allowed  # may this peer send one (proxy_allow_ips)?
        self._buffer = b""
        self.result: ProxyResult | None = None  # set once a header was read
        self._v2 = False

    def feed(self, data: bytes) -> bytes | None:
        """The bytes after the header (all of them when there is none), or None while the start
        of the connection could still be a header.  Raises :class:`ProtocolError`."""
        buffer = self._buffer + data
        signature = next((s for s in self.versions if buffer[:len(s)] == s[:len(buffer)]), None)
        if signature is None:
            self._buffer = b""
            return buffer  # plain HTTP: the header is optional
        if len(buffer) < len(signature):
            self._buffer = buffer
            return None
        if not self.allowed:
            raise ProtocolError(403, "PROXY header from a peer not in proxy_allow_ips")
        end = self._header_end(buffer, signature)
        if end is None:
            self._buffer = buffer
            return None
        self._buffer = b""
        self._v2 = signature == V2_SIGNATURE
        parser: ProxyProtocol = ProxyProtocolV2() if self._v2 else ProxyProtocolV1()
        try:
            self.result = parser.unpack(buffer[:end])
        except (ProxyProtocolIncompleteError, ValueError, KeyError) as exc:
            raise ProtocolError(400, f"invalid PROXY header: {exc or type(exc).__name__}") from None
        return buffer[end:]

    @staticmethod
    def _header_end(buffer: bytes, signature: bytes) -> int | None:
        if signature == V2_SIGNATURE:
            if len(buffer) < 16:
                return None
            end = 16 + int.from_bytes(buffer[14:16], "big")
            return end if len(buffer) >= end else None
        newline = buffer.find(b"\r\n", 0, V1_MAX_LINE)
        if newline >= 0:
            return newline + 2
        if len(buffer) >= V1_MAX_LINE:
            raise ProtocolError(400, f"invalid PROXY header: no CRLF within {V1_MAX_LINE} bytes")
        return None

    @property
    def source(self) -> tuple[str, int] | None:
        """The client's address and port from the header; None for LOCAL, UNKNOWN, UNIX and
        non-TCP v2 headers (the connection's own peer stands) or when no header was read."""
        result = self.result
        if result is None or (self._v2 and result.protocol != socket.SOCK_STREAM):
            return None  # a v2 header for another transport (UDP, unspecified): not ours to use
        if is_ipv4(result) or is_ipv6(result):
            address, port = result.source
            return str(address), port
        return None
