"""Events produced by the sans-I/O request parser, and the error it raises.

Events are small slotted classes rather than frozen dataclasses: one is built per request and per
body chunk on the hot path, and frozen dataclasses pay for ``object.__setattr__`` on every field.
They are treated as immutable all the same.
"""

from __future__ import annotations

from http import HTTPStatus


class ProtocolError(Exception):
    """The client broke HTTP/1.1; ``status`` is the response to send before closing."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {HTTPStatus(status).phrase}: {detail}")
        self.status = status
        self.detail = detail


class RequestHead:
    """A complete request line and header section (RFC 9112 §2.1)."""

    __slots__ = ("method", "target", "version", "headers", "keep_alive", "expect_continue",
                 "content_length", "chunked", "upgrade", "host")

    def __init__(self, method: str, target: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool, expect_continue: bool,
                 content_length: int | None, chunked: bool, upgrade: str | None,
                 host: bytes | None) -> None:
        self.method = method
        self.target = target
        self.version = version          # "1.0" or "1.1"
        self.headers = headers          # as received: (name, value), name in its original case
        self.keep_alive = keep_alive    # what the client asked for (Connection, version)
        self.expect_continue = expect_continue
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade          # lower-cased Upgrade value when an upgrade was requested
        self.host = host

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.version}>"


class Body:
    """A piece of the request body, already de-chunked."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Body {len(self.data)} bytes>"


class EndOfMessage:
    """The request body (possibly empty) is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<EndOfMessage>"


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
END_OF_MESSAGE = EndOfMessage()

Event = RequestHead | Body | EndOfMessage
