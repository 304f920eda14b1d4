"""Sans-I/O HTTP/1.1 request parsing over httptools (llhttp).

Design notes
------------
* ``feed(data)`` hands bytes to llhttp, whose callbacks append events to a queue; ``next_event()``
  pops them, or returns ``NEED_DATA``.  The caller reads the socket only when it gets ``NEED_DATA``,
  so memory stays bounded by one read (a 1 GiB upload is never held whole).
* One parser serves every request of a connection; pipelined requests simply queue up.
* llhttp is strict about syntax (bare CR/LF, obs-fold, bad chunk framing, CL+TE, duplicate
  Content-Length are errors), but accepts some things a server must refuse, which we check when
  the head is complete: versions other than 1.0/1.1, Transfer-Encoding in HTTP/1.0, transfer
  codings other than chunked (501, RFC 9112 §6.1), a missing or repeated Host in HTTP/1.1
  (RFC 9112 §3.2), Content-Length that is not plain digits (RFC 9110 §8.6).
* Limits: llhttp has none.  The request line and each field are measured in the callbacks
  (414 and 431); and because httptools accumulates a header in memory before calling back, the
  bytes fed while the head is incomplete are counted too, so one endless header cannot grow
  without bound (431).
* An Upgrade request (RFC 9110 §7.8) stops llhttp after the head; the bytes after it are kept in
  ``trailing``.  The caller either takes them over (WebSocket) or calls ``decline_upgrade()`` to
  go on parsing HTTP.  An upgrade request with a body cannot be declined safely, so it is a 501.
* Errors carry their HTTP status (:class:`ProtocolError`); after one, the parser is dead.  When
  complete requests were queued before the bad bytes (pipelining), ``feed`` does not raise: their
  events come out of ``next_event()`` first, and then it raises the error.
"""

from __future__ import annotations

import re
from collections import deque

import httptools

from .events import END_OF_MESSAGE, NEED_DATA, Body, Event, ProtocolError, RequestHead

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 3986 §3.2.2/§3.2.3: IP-literal or reg-name, then an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
_DIGITS = re.compile(rb"[0-9]+")
_OWS = b" \t"

# Header names compared case-insensitively; matching on these exact spellings first is faster.
_CONTENT_LENGTH = (b"content-length",)
_SLACK = 4096  # room for the request line's method, version and CRLFs beyond the measured parts

_STATE_HEAD, _STATE_BODY, _STATE_UPGRADE, _STATE_ERROR = range(4)


class RequestParser:
    """Turns the bytes a client sends into :mod:`~appserver.http.events`."""

    def __init__(self, *, max_request_line: int = 4094, max_fields: int = 100,
                 max_field_size: int = 8190, max_body: int = 0) -> None:
        self.max_request_line = max_request_line
        self.max_fields = max_fields
        self.max_field_size = max_field_size
        self.max_body = max_body  # 0: unlimited
        self._max_head = max_request_line + max_fields * (max_field_size + 4) + _SLACK
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[Event] = deque()
        self._state = _STATE_HEAD
        self._error: ProtocolError | None = None
        self.trailing = b""  # bytes after an upgrade request's head
        self._reset_message()

    # ---- public API -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises :class:`ProtocolError` for input a server must reject."""
        if self._error is not None:
            raise self._error
        if self._state == _STATE_UPGRADE:
            self.trailing += data
            return
        self._fresh = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.trailing = bytes(data[exc.args[0]:])
            self._state = _STATE_UPGRADE
            return
        except httptools.HttpParserError as exc:
            self._fail(self._error or self._classify(exc, data))
        if self._state == _STATE_HEAD and self._in_message:
            # Count what the head has cost so far (see the design notes).  A call in which a
            # message began is not counted: the error is bounded by one read.
            if not self._fresh:
                self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                if not self._url_done and self._url_len + len(data) > self.max_request_line:
                    self._fail(ProtocolError(414, "request line too long"))
                self._fail(ProtocolError(431, "request header section too large"))

    def next_event(self) -> Event | object:
        """The next event, or ``NEED_DATA`` when more bytes must be fed first."""
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise self._error
        return NEED_DATA

    def has_pending_event(self) -> bool:
        """next_event() would return an event or raise a deferred error without more data."""
        return bool(self._events) or self._error is not None

    @property
    def in_message(self) -> bool:
        """Part of a request has been parsed and its head or body is not complete yet."""
        return self._in_message

    @property
    def upgraded(self) -> bool:
        """An upgrade request's head was parsed; the bytes after it are in ``trailing``."""
        return self._state == _STATE_UPGRADE and not self._events

    def decline_upgrade(self) -> None:
        """Treat the upgrade request as plain HTTP and parse what followed it as HTTP."""
        if self._state != _STATE_UPGRADE:
            return
        self._state = _STATE_HEAD
        trailing, self.trailing = self.trailing, b""
        if trailing:
            self.feed(trailing)

    def feed_eof(self) -> None:
        """The client closed its side: an unfinished message is a 400."""
        if self._in_message and self._state != _STATE_UPGRADE:
            self._fail(ProtocolError(400, "connection closed in the middle of a request"))

    # ---- llhttp callbacks -----------------------------------------------------------------

    def _reset_message(self) -> None:
        self._in_message = False
        self._url_parts: list[bytes] = []
        self._url_len = 0
        self._url_done = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body_bytes = 0
        self._fresh = True

    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True

    def on_url(self, part: bytes) -> None:
        self._url_len += len(part)
        if self._url_len > self.max_request_line:
            self._raise(ProtocolError(414, "request line too long"))
        self._url_parts.append(part)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._url_done = True
        if len(self._headers) >= self.max_fields:
            self._raise(ProtocolError(431, f"more than {self.max_fields} header fields"))
        if len(name) + len(value) + 2 > self.max_field_size:
            self._raise(ProtocolError(
                431, f"header field {name[:64]!r} larger than {self.max_field_size} bytes"))
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._url_done = True
        self._fresh = True
        head = self._build_head()
        self._state = _STATE_BODY
        self._events.append(head)

    def on_body(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self.max_body and self._body_bytes > self.max_body:
            self._raise(ProtocolError(413, f"request body larger than {self.max_body} bytes"))
        self._events.append(Body(data))

    def on_message_complete(self) -> None:
        self._events.append(END_OF_MESSAGE)
        self._state = _STATE_HEAD
        self._reset_message()

    # ---- checks llhttp leaves to us ---------------------------------------------------------

    def _build_head(self) -> RequestHead:
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            if version == "0.9":
                self._raise(ProtocolError(400, "HTTP/0.9 requests are not supported"))
            self._raise(ProtocolError(505, f"HTTP/{version} is not supported"))
        method = parser.get_method().decode("ascii")
        target = b"".join(self._url_parts)
        self._check_target(method, target)

        host: bytes | None = None
        content_length: int | None = None
        transfer_codings: list[bytes] = []
        expect_continue = False
        upgrade: str | None = None
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"host":
                if host is not None:
                    self._raise(ProtocolError(400, "more than one Host header"))
                host = value.strip(_OWS)
                if not _HOST.fullmatch(host):
                    self._raise(ProtocolError(400, "invalid Host header"))
            elif lname in _CONTENT_LENGTH:
                digits = value.strip(_OWS)
                if not _DIGITS.fullmatch(digits):
                    self._raise(ProtocolError(400, "invalid Content-Length"))
                content_length = int(digits)
            elif lname == b"transfer-encoding":
                transfer_codings.extend(c.strip(_OWS).lower() for c in value.split(b","))
            elif lname == b"expect":
                if value.strip(_OWS).lower() != b"100-continue":
                    self._raise(ProtocolError(417, "only Expect: 100-continue is supported"))
                expect_continue = version == "1.1"
            elif lname == b"upgrade":
                upgrade = value.strip(_OWS).decode("latin-1").lower()

        if version == "1.1" and host is None:
            self._raise(ProtocolError(400, "HTTP/1.1 request without a Host header"))
        chunked = False
        if transfer_codings:
            if version == "1.0":
                self._raise(ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request"))
            unknown = [c for c in transfer_codings if c != b"chunked"]
            if unknown:
                self._raise(ProtocolError(
                    501, f"transfer coding {unknown[0].decode('latin-1')!r} is not supported"))
            if content_length is not None:
                self._raise(ProtocolError(400, "both Content-Length and Transfer-Encoding"))
            chunked = True
        if content_length is not None and self.max_body and content_length > self.max_body:
            self._raise(ProtocolError(413, f"request body larger than {self.max_body} bytes"))

        if parser.should_upgrade():
            if method == "CONNECT":
                self._raise(ProtocolError(501, "CONNECT is not supported"))
            if chunked or content_length:
                # llhttp would treat the body as upgraded bytes; we cannot decline such a request.
                self._raise(ProtocolError(501, "an Upgrade request with a body is not supported"))
        else:
            upgrade = None
        return RequestHead(method, target, version, self._headers, parser.should_keep_alive(),
                           expect_continue, content_length, chunked, upgrade, host)

    def _check_target(self, method: str, target: bytes) -> None:
        # RFC 9112 §3.2: origin-form, absolute-form, authority-form (CONNECT), asterisk (OPTIONS).
        if target.startswith(b"/"):
            return
        if target == b"*" and method == "OPTIONS":
            return
        lowered = target[:8].lower()
        if lowered.startswith((b"http://", b"https://")) or method == "CONNECT":
            return
        self._raise(ProtocolError(400, "invalid request target"))

    # ---- errors -----------------------------------------------------------------------------

    def _raise(self, error: ProtocolError) -> None:
        # Raised inside an llhttp callback: httptools re-raises it as a callback error, so keep
        # our own copy to report the right status.
        self._error = error
        raise error

    def _fail(self, error: ProtocolError) -> None:
        self._error = error
        self._state = _STATE_ERROR
        if self._events and not self._events[-1] is END_OF_MESSAGE:
            # Events of the request that failed are worthless; those of complete earlier requests
            # (pipelined before the bad one) are still served first.
            while self._events and self._events[-1] is not END_OF_MESSAGE:
                self._events.pop()
        if not self._events:
            raise error
        # Deferred: next_event() raises it once the queued events are consumed.

    def _classify(self, exc: httptools.HttpParserError, data: bytes) -> ProtocolError:
        message = str(exc)
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            # Unknown but well-formed method: 501 (RFC 9110 §9.1); garbage: 400.
            first = data.lstrip(b"\r\n").split(b" ", 1)[0] if not self._url_parts else b""
            if first and _TOKEN.fullmatch(first) and b" " in data:
                return ProtocolError(501, f"method {first[:32].decode('latin-1')!r} is not supported")
            return ProtocolError(400, "invalid method")
        if "Invalid HTTP version" in message:
            return ProtocolError(505, "HTTP version not supported")
        if "Content-Length overflow" in message:
            return ProtocolError(413, "Content-Length too large")
        return ProtocolError(400, message or "malformed request")
