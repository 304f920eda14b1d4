"""Unknown request methods (RFC 9110 §9.1): the part llhttp leaves to us.

llhttp knows the registered methods and stops at the first byte that matches none of them,
without saying where that byte was.  A well-formed unknown method (a token followed by SP) earns
a 501, anything else a 400; telling them apart needs the whole token, which may arrive over
several reads (:class:`MethodScan`), read from where the bad request starts, which llhttp does not
give (:func:`end_of_requests` finds it by bisecting with a scratch parser -- on the error path
only).
"""

from __future__ import annotations

import itertools
import re
from types import SimpleNamespace

import httptools

from .events import ProtocolError

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
TOKEN_TAIL = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*\Z")


class MethodScan:
    """The method of a request llhttp refused, read until its token ends."""

    def __init__(self, prefix: bytes, max_request_line: int) -> None:
        self.text = prefix[:64]
        self.length = len(prefix)
        self.max_request_line = max_request_line

    def feed(self, data: bytes) -> ProtocolError | None:
        """The error the request earns, or None while its token goes on."""
        match = TOKEN.match(data)
        size = match.end() if match else 0
        self.text = (self.text + data[:size])[:64]
        self.length += size
        if self.length > self.max_request_line:
            return ProtocolError(414, "request line too long")
        if size == len(data):
            return None
        if data[size:size + 1] == b" " and self.length:
            return ProtocolError(501, f"method {self.text[:32].decode('latin-1')!r} is not supported")
        return ProtocolError(400, "invalid method")


def end_of_requests(data: bytes, count: int) -> int:
    """Where the first ``count`` requests in ``data`` (which starts between requests) end."""
    low, high = 0, len(data)
    while low < high:
        middle = (low + high) // 2
        ends = itertools.count()  # next(ends) is how many requests ended
        scratch = SimpleNamespace(on_message_complete=ends.__next__)
        try:
            httptools.HttpRequestParser(scratch).feed_data(data[:middle])
        except httptools.HttpParserError:
            pass
        low, high = (low, middle) if next(ends) >= count else (middle + 1, high)
    return low


def end_of_head(tail: bytes, data: bytes) -> int:
    """Where a head that began before ``data`` (its last bytes were ``tail``) ends in ``data``:
    at its first CRLFCRLF, as llhttp allows no bare CR or LF in a head."""
    return (tail + data).find(b"\r\n\r\n") + 4 - len(tail)
