"""Feed a request to :class:`RequestParser` in several ways and compare what comes out.

The house rule for parsers (design.md): every case is fed whole, one byte at a time, and followed
by trailing data, and all of these must agree.  ``outcome()`` runs one way and returns a plain,
comparable record; ``feed_every_way()`` runs them all, asserts they agree and returns the record
of the whole feed for the test to check against what it expects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from appserver.http import NEED_DATA, Body, EndOfMessage, ProtocolError, RequestHead, RequestParser


@dataclass(frozen=True)
class Head:
    """A snapshot of a :class:`RequestHead`, taken when the event was handed out."""

    method: str
    target: bytes
    version: str
    headers: tuple[tuple[bytes, bytes], ...]
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    chunked: bool
    upgrade: str | None
    host: bytes | None

    @classmethod
    def of(cls, head: RequestHead) -> Head:
        return cls(head.method, head.target, head.version, tuple(head.headers), head.keep_alive,
                   head.expect_continue, head.content_length, head.chunked, head.upgrade, head.host)


@dataclass(frozen=True)
class Data:
    """Body bytes; consecutive Body events are joined (how a body is cut is not an event)."""

    data: bytes


@dataclass(frozen=True)
class End:
    pass


Item = Head | Data | End


@dataclass
class Outcome:
    events: list[Item] = field(default_factory=list)
    status: int | None = None          # the ProtocolError's status, if one was raised
    upgraded: bool = False
    trailing: bytes = b""              # parser.trailing once upgraded

    @property
    def heads(self) -> list[Head]:
        return [e for e in self.events if isinstance(e, Head)]

    @property
    def kinds(self) -> list[str]:
        return [type(e).__name__.lower() for e in self.events]

    def bodies(self) -> list[bytes]:
        """The body of each request, in order (b"" when it had none)."""
        result: list[bytes] = []
        for event in self.events:
            if isinstance(event, Head):
                result.append(b"")
            elif isinstance(event, Data):
                result[-1] += event.data
        return result


def _record(outcome: Outcome, event: object) -> None:
    if isinstance(event, RequestHead):
        outcome.events.append(Head.of(event))
    elif isinstance(event, Body):
        assert event.data, "empty Body event"
        last = outcome.events[-1] if outcome.events else None
        if isinstance(last, Data):
            outcome.events[-1] = Data(last.data + event.data)
        else:
            outcome.events.append(Data(event.data))
    elif isinstance(event, EndOfMessage):
        outcome.events.append(End())
    else:  # pragma: no cover - a new event type needs a snapshot here
        raise AssertionError(f"unexpected event {event!r}")


def outcome(pieces: Iterable[bytes], *, eof: bool = False, decline: bool = False,
            limits: dict[str, int] | None = None) -> Outcome:
    """Feed ``pieces`` one after another, taking every event after each; stop at an error.
    ``decline``: call decline_upgrade() whenever the parser reports an upgrade."""
    parser = RequestParser(**(limits or {}))
    result = Outcome()
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                _record(result, event)
            if decline and parser.upgraded:
                parser.decline_upgrade()
                while (event := parser.next_event()) is not NEED_DATA:
                    _record(result, event)
        if eof:
            parser.feed_eof()
            while (event := parser.next_event()) is not NEED_DATA:
                _record(result, event)
    except ProtocolError as exc:
        result.status = exc.status
        assert _stays_dead(parser)
    result.upgraded = parser.upgraded
    result.trailing = parser.trailing
    return result


def _stays_dead(parser: RequestParser) -> bool:
    """After an error the parser raises again rather than parse anything more."""
    for attempt in (parser.next_event, lambda: parser.feed(PIPELINED)):
        try:
            attempt()
        except ProtocolError:
            continue
        return False
    return True


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


PIPELINED = b"GET /next HTTP/1.1\r\nHost: next.example\r\n\r\n"
GARBAGE = b"\x00\x01 not http at all\r\n\r\n"
NEXT_HEAD = Head("GET", b"/next", "1.1", ((b"Host", b"next.example"),), True, False, None, False,
                 None, b"next.example")


def feed_every_way(data: bytes, **limits: int) -> Outcome:
    """Feed ``data`` whole, byte by byte, and followed by a pipelined request or garbage (each
    also byte by byte); assert they all agree; return the outcome of the whole feed."""
    whole = outcome([data], limits=limits)
    assert outcome(bytewise(data), limits=limits) == whole, "byte by byte differs from whole"
    for trailer in (PIPELINED, GARBAGE):
        longer = outcome([data + trailer], limits=limits)
        assert outcome(bytewise(data + trailer), limits=limits) == longer, \
            f"{trailer!r} after the case: byte by byte differs from whole"
        assert longer == expected_with_trailer(whole, trailer), f"{trailer!r} after the case"
    return whole


def expected_with_trailer(whole: Outcome, trailer: bytes) -> Outcome:
    """What trailing bytes must change: nothing after an error or a closing request, the
    ``trailing`` buffer of an upgrade, and otherwise one more request (or a 400 for garbage)."""
    if whole.status is not None:
        return whole
    if whole.upgraded:
        return Outcome(list(whole.events), None, True, whole.trailing + trailer)
    assert whole.events and isinstance(whole.events[-1], End), "the case left a request unfinished"
    if not whole.heads[-1].keep_alive:
        return whole  # RFC 9112 §9.6: nothing after a closing request is processed
    if trailer == PIPELINED:
        return Outcome([*whole.events, NEXT_HEAD, End()])
    return Outcome(list(whole.events), 400)


def head(method: str = "GET", target: bytes = b"/", version: str = "1.1", *,
         headers: tuple[tuple[bytes, bytes], ...] = ((b"Host", b"a"),), keep_alive: bool = True,
         expect_continue: bool = False, content_length: int | None = None, chunked: bool = False,
         upgrade: str | None = None, host: bytes | None = b"a") -> Head:
    """An expected head; the defaults describe ``GET / HTTP/1.1`` with ``Host: a``."""
    return Head(method, target, version, headers, keep_alive, expect_continue, content_length,
                chunked, upgrade, host)
