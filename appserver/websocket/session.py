"""A WebSocket session over the ``websockets`` package's sans-I/O protocol, free of I/O: bytes
in, messages and bytes-to-send out.

``websockets.protocol.Protocol`` parses and checks frames (masking, reserved bits, control-frame
rules, continuation order), enforces the message size limit (close 1009), answers pings and runs
the closing handshake.  This layer adds what a server's app API needs on top: whole messages
(text decoded and validated as UTF-8, close 1007 when it is not -- the protocol object leaves
that to its caller), the close code and reason the app sees, and counters for the server's
keep-alive pings and idle limit.  Every method returns the bytes to send.

Why not wsproto (the first version): one 64-byte round trip (parse a masked frame, queue the
message, frame the reply) cost 28.5 us with wsproto against 6.7-9.8 us here, and the echo
benchmark through nginx was bound by it (bench/README.md).

Design note (states).  The protocol object owns the state: OPEN until a close frame is sent or
received, then CLOSING.  ``finished`` (no more messages will arrive) is true once either side
closed or the connection failed; ``closed`` (nothing more to exchange: the socket may go) once
close frames went both ways, the protocol failed the connection (a server then stops at once,
RFC 6455 §7.1.7), or the peer's bytes ended.
"""

from __future__ import annotations

import codecs
import logging
from collections import deque
from typing import Any, cast

from websockets.exceptions import ProtocolError
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol

MESSAGE_TOO_BIG = 1009
INVALID_DATA = 1007
NORMAL = 1000
NO_STATUS = 1005
ABNORMAL = 1006
MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code

TEXT, BINARY, CONT, PONG, CLOSE = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG,
                                   Opcode.CLOSE)

# The protocol logs "connection closed" at INFO for every connection and its own internal
# errors at ERROR; only the latter are worth the app's log.
_LOG = logging.getLogger("appserver.websocket.protocol")
# (counters, slot of messages received, slot of messages sent): set in a worker by
# appserver.metrics.recorder (plain stores into its shared memory), None otherwise.
message_counters: tuple[Any, int, int] | None = None


def _count(direction: int) -> None:
    counters = message_counters
    if counters is not None:
        counters[0][counters[direction]] += 1
_LOG.setLevel(logging.WARNING)


def _utf8_prefix(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def _outgoing(writes: list[bytes]) -> bytes:
    # An empty item means "half-close now" (the protocol's SEND_EOF); the worker closes the
    # socket once ``closed`` is true, so it carries nothing here.
    return writes[0] if len(writes) == 1 else b"".join(writes)


class WebSocketSession:
    __slots__ = ("_proto", "_parts", "_text", "_decoder", "_eof", "messages", "close_code",
                 "close_reason", "pongs", "data_frames", "max_message_size")

    def __init__(self, max_message_size: int = 16 << 20) -> None:
        self._proto = Protocol(SERVER, state=OPEN, max_size=max_message_size, logger=_LOG)
        self.max_message_size = max_message_size
        self.messages: deque[str | bytes] = deque()
        self._parts: list[bytes] = []        # the frames of a fragmented message so far
        self._text = False                   # the fragmented message is text
        self._decoder: codecs.IncrementalDecoder | None = None
        self._eof = False
        self.close_code: int | None = None   # set once the session has ended, either way
        self.close_reason = ""
        self.pongs = 0
        self.data_frames = 0  # message frames received: activity for the idle limit

    @property
    def open(self) -> bool:
        return self._proto.state is OPEN

    @property
    def finished(self) -> bool:
        """No more messages can arrive: closed by either side, or failed."""
        return self.close_code is not None

    @property
    def closed(self) -> bool:
        """The closing handshake is complete, the connection failed, or it dropped."""
        return self._eof or self._proto.eof_sent

    def receive_data(self, data: bytes | None) -> bytes:
        """Feed bytes from the peer (None: the connection dropped)."""
        if self._eof:
            return b""
        proto = self._proto
        if data is None:
            self._eof = True
            proto.receive_eof()
        else:
            proto.receive_data(data)
        # A Protocol already in the OPEN state only ever produces frames (the handshake events
        # belong to its client/server subclasses, which this does not use); a parsed frame's
        # payload is bytes.
        for frame in cast("list[Frame]", proto.events_received()):
            opcode = frame.opcode
            if opcode is TEXT or opcode is BINARY or opcode is CONT:
                self.data_frames += 1
                if self.close_code is None:
                    self._on_data(opcode, cast(bytes, frame.data), frame.fin)
            elif opcode is PONG:
                self.pongs += 1
            elif opcode is CLOSE and self.close_code is None:
                received = proto.close_rcvd
                assert received is not None
                self.close_code, self.close_reason = received.code, received.reason
        if self.close_code is None and proto.state is not OPEN:
            self._note_failure()
        return _outgoing(proto.data_to_send())

    def _on_data(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is not CONT:
            if fin:  # the common case: a whole message in one frame
                if opcode is BINARY:
                    self.messages.append(data)
                    _count(1)
                    return
                try:
                    self.messages.append(data.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    self._invalid_utf8(exc)
                    return
                _count(1)
                return
            self._text = opcode is TEXT
            self._decoder = codecs.getincrementaldecoder("utf-8")() if self._text else None
            self._parts.clear()
        if self._decoder is not None:
            try:  # validate as the fragments arrive: fail early, as RFC 6455 §8.1 allows
                self._decoder.decode(data, final=fin)
            except UnicodeDecodeError as exc:
                self._invalid_utf8(exc)
                return
        self._parts.append(data)
        if fin:
            whole = b"".join(self._parts)
            self._parts.clear()
            self._decoder = None
            self.messages.append(whole.decode("utf-8") if self._text else whole)
            _count(1)

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        self._parts.clear()
        self._decoder = None
        reason = f"invalid UTF-8 in a text message: {exc.reason}"
        self.close_code, self.close_reason = INVALID_DATA, reason
        self._proto.fail(INVALID_DATA, reason)  # its close frame goes out with receive_data's

    def _note_failure(self) -> None:
        """The protocol left OPEN by itself: a bad frame (its close frame is queued) or EOF."""
        proto = self._proto
        if proto.close_sent is not None:
            self.close_code, self.close_reason = proto.close_sent.code, proto.close_sent.reason
        else:
            self.close_code, self.close_reason = ABNORMAL, "connection dropped"

    def fail(self, code: int, reason: str) -> bytes:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame; no more messages."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._proto.state is OPEN:
            self._proto.fail(code, _utf8_prefix(reason, MAX_REASON_BYTES))
            return _outgoing(self._proto.data_to_send())
        return b""

    def send_message(self, data: str | bytes) -> bytes:
        proto = self._proto
        if proto.state is not OPEN:
            raise ConnectionError("the WebSocket is closed")
        if isinstance(data, str):
            proto.send_text(data.encode("utf-8"))
        else:
            proto.send_binary(data)
        _count(2)
        return _outgoing(proto.data_to_send())

    def ping(self, payload: bytes = b"") -> bytes:
        if self._proto.state is not OPEN:
            return b""
        self._proto.send_ping(payload)
        return _outgoing(self._proto.data_to_send())

    def close(self, code: int = NORMAL, reason: str = "") -> bytes:
        """Start the closing handshake (the protocol answers a peer's close by itself)."""
        proto = self._proto
        if proto.state is not OPEN:
            return b""
        try:
            proto.send_close(code, _utf8_prefix(reason, MAX_REASON_BYTES))
        except ProtocolError:
            raise ValueError(f"{code} is not a close code an endpoint may send (RFC 6455 §7.4; "
                             f"use 1000-1014 or 3000-4999)") from None
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        return _outgoing(proto.data_to_send())
