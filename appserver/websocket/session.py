"""A WebSocket session over wsproto, free of I/O: bytes in, messages and bytes-to-send out.

wsproto does the framing, masking checks, fragmentation, UTF-8 validation and close handshake;
this adds whole-message assembly with a size limit (close 1009), automatic pongs, and the
bookkeeping the server's keep-alive pings need.  Every method returns the bytes to send.
"""

from __future__ import annotations

from collections import deque

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

MESSAGE_TOO_BIG = 1009
NORMAL = 1000
NO_STATUS = 1005
ABNORMAL = 1006


class WebSocketSession:
    def __init__(self, max_message_size: int = 16 << 20) -> None:
        self._conn = Connection(ConnectionType.SERVER)
        self.max_message_size = max_message_size
        self.messages: deque[str | bytes] = deque()
        self._parts: list[str | bytes] = []
        self._size = 0
        self.close_code: int | None = None   # set once the session has ended, either way
        self.close_reason = ""
        self.pongs = 0
        self.data_frames = 0  # message frames received: activity for the idle limit

    @property
    def open(self) -> bool:
        return self._conn.state is ConnectionState.OPEN

    @property
    def finished(self) -> bool:
        """No more messages can arrive: closed by either side, or failed."""
        return self.close_code is not None

    def receive_data(self, data: bytes | None) -> bytes:
        """Feed bytes from the peer (None: the connection dropped)."""
        if self.finished and self._conn.state is ConnectionState.CLOSED:
            return b""
        out = b""
        try:
            self._conn.receive_data(data)
        except LocalProtocolError:
            return b""
        for event in self._conn.events():
            if isinstance(event, Message):
                out += self._on_message(event)
            elif isinstance(event, Ping):
                if self._conn.state is ConnectionState.OPEN:
                    out += self._conn.send(event.response())
            elif isinstance(event, Pong):
                self.pongs += 1
            elif isinstance(event, CloseConnection):
                out += self._on_close(event)
            if self.finished and not self.open:
                break
        return out

    def _on_message(self, event: Message) -> bytes:  # type: ignore[type-arg]
        if self.finished:
            return b""
        self.data_frames += 1
        self._size += len(event.data)
        if self._size > self.max_message_size:
            self._parts.clear()
            return self.fail(MESSAGE_TOO_BIG, f"message larger than {self.max_message_size} bytes")
        self._parts.append(event.data)
        if event.message_finished:
            if isinstance(event, TextMessage):
                message: str | bytes = "".join(self._parts)  # type: ignore[arg-type]
            else:
                assert isinstance(event, BytesMessage)
                message = b"".join(bytes(part) for part in self._parts)  # type: ignore[arg-type]
            self.messages.append(message)
            self._parts.clear()
            self._size = 0
        return b""

    def _on_close(self, event: CloseConnection) -> bytes:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: echo its code (RFC 6455 §5.5.1).
            self.close_code, self.close_reason = event.code, event.reason or ""
            code = NORMAL if event.code in (NO_STATUS, ABNORMAL) else event.code
            return self._conn.send(CloseConnection(code=code))
        if state is ConnectionState.CLOSED:
            if self.close_code is None:  # the reply to our close, or the connection dropped
                self.close_code, self.close_reason = event.code, event.reason or ""
            return b""
        # A protocol error reported by wsproto (bad frame, unmasked frame, invalid UTF-8).
        return self.fail(event.code, event.reason or "protocol error")

    def fail(self, code: int, reason: str) -> bytes:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame; no more messages."""
        self.close_code, self.close_reason = code, reason
        if self._conn.state is ConnectionState.OPEN:
            return self._conn.send(CloseConnection(code=code, reason=reason[:120]))
        return b""

    def send_message(self, data: str | bytes) -> bytes:
        if not self.open:
            raise ConnectionError("the WebSocket is closed")
        if isinstance(data, str):
            return self._conn.send(TextMessage(data=data))
        return self._conn.send(BytesMessage(data=bytes(data)))

    def ping(self, payload: bytes = b"") -> bytes:
        return self._conn.send(Ping(payload=payload)) if self.open else b""

    def close(self, code: int = NORMAL, reason: str = "") -> bytes:
        """Start (or answer) the closing handshake."""
        if self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
            return self._conn.send(CloseConnection(code=code, reason=reason[:120]))
        return b""

    @property
    def closed(self) -> bool:
        """The closing handshake is complete (or the connection dropped)."""
        return self._conn.state is ConnectionState.CLOSED
