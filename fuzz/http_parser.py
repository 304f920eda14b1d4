#!/usr/bin/env python3
"""Coverage-guided fuzzing of the HTTP request parser (appserver/http/parser.py) with atheris.

Run (see fuzz/README.md)::

    python fuzz/http_parser.py /tmp/http-corpus fuzz/corpus/http -max_total_time=600

An input is two control bytes and the bytes a client sends:

* byte 0, flags: bit 0 calls ``decline_upgrade()`` whenever the parser reports an upgrade; bit 1
  uses small limits (request line 64, 8 fields of 64 bytes, body 32), so that every limit's path
  is reachable with short inputs; bit 2 ends with ``feed_eof()``;
* byte 1 seeds where the bytes are cut into reads (0: fed whole);
* the rest is fed to the parser.

What must hold, however the input is cut (anything else is a crash for libFuzzer):

* the only exception is :class:`~appserver.http.ProtocolError`, with a status the parser
  documents (400, 413, 414, 417, 431, 501, 505); after it the parser stays dead;
* every head respects the limits (request line, field count, field size), every Body event has
  bytes, and the bodies together stay within ``max_body``.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports(include=["appserver.http"]):
    from appserver.http import NEED_DATA, Body, EndOfMessage, ProtocolError, RequestHead, RequestParser

STATUSES = frozenset({400, 413, 414, 417, 431, 501, 505})
SMALL = {"max_request_line": 64, "max_fields": 8, "max_field_size": 64, "max_body": 32}
DEFAULT = {"max_request_line": 4094, "max_fields": 100, "max_field_size": 8190, "max_body": 0}
NEXT = b"GET /next HTTP/1.1\r\nHost: next\r\n\r\n"


def cuts(data: bytes, seed: int) -> list[bytes]:
    """``data`` in reads of 1..64 bytes chosen by a small LCG from ``seed`` (0: whole)."""
    if not seed:
        return [data]
    pieces, start, state = [], 0, seed
    while start < len(data):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        size = 1 + (state >> 16) % 64
        pieces.append(data[start:start + size])
        start += size
    return pieces


class Checker:
    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self.body = 0

    def event(self, event: object) -> None:
        limits = self.limits
        if isinstance(event, RequestHead):
            self.body = 0
            assert len(event.target) <= limits["max_request_line"], event
            assert len(event.headers) <= limits["max_fields"], event
            for name, value in event.headers:
                assert len(name) + len(value) + 2 <= limits["max_field_size"], (name, value)
        elif isinstance(event, Body):
            assert event.data, "empty Body event"
            self.body += len(event.data)
            assert not limits["max_body"] or self.body <= limits["max_body"], self.body
        else:
            assert isinstance(event, EndOfMessage), event


def run(pieces: list[bytes], limits: dict[str, int], decline: bool, eof: bool) -> int | None:
    """Feed ``pieces``, checking every event; the ProtocolError's status, or None."""
    parser = RequestParser(**limits)
    check = Checker(limits)

    def drain() -> None:
        while (event := parser.next_event()) is not NEED_DATA:
            check.event(event)

    try:
        for piece in pieces:
            parser.feed(piece)
            drain()
            if decline and parser.upgraded:
                parser.decline_upgrade()
                drain()
        if eof:
            parser.feed_eof()
            drain()
    except ProtocolError as exc:
        assert exc.status in STATUSES, exc
        for attempt in (parser.next_event, lambda: parser.feed(NEXT)):
            try:
                attempt()
            except ProtocolError:
                continue
            raise AssertionError("the parser went on after an error") from None
        return exc.status
    return None


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    if len(data) < 2:
        return
    flags, seed, payload = data[0], data[1], data[2:]
    limits = SMALL if flags & 2 else DEFAULT
    decline, eof = bool(flags & 1), bool(flags & 4)
    run(cuts(payload, 0), limits, decline, eof)
    if seed:
        run(cuts(payload, seed), limits, decline, eof)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
