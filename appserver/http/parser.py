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
  (414, 431); as httptools joins a field's pieces in memory before calling back, the bytes fed
  while a head (or a chunked body's trailer section) is incomplete are counted too, for the whole
  and for the field being received, so one endless header fails early (431).
* An unknown but well-formed method is a 501, garbage a 400 (:mod:`.methods`); the parser
  waits for the whole token (``_STATE_BAD_METHOD``), so the status does not depend on how the
  bytes were split -- except right after a chunked request that began in an earlier read (400).
* Nothing after a request that closes the connection is parsed (RFC 9112 §9.6).
* An Upgrade request (RFC 9110 §7.8) stops llhttp after the head; the bytes after it are kept in
  ``trailing``.  The caller either takes them over (WebSocket) or calls ``decline_upgrade()`` to
  go on parsing HTTP.  An upgrade request with a body cannot be declined safely, so it is a 501.
* Errors carry their HTTP status (:class:`ProtocolError`); after one, the parser is dead.  The
  events parsed before the bad bytes are kept -- a caller fed byte by byte has taken them already,
  so dropping them would make the events depend on how the input was split.  When events are
  queued, ``feed`` does not raise: they come out of ``next_event()`` first, and then it raises.
"""

from __future__ import annotations

import re
from collections import deque

import httptools

from .events import END_OF_MESSAGE, NEED_DATA, Body, Event, ProtocolError, RequestHead
from .methods import TOKEN_TAIL, MethodScan, end_of_head, end_of_requests

# RFC 3986 §3.2.2/§3.2.3: IP-literal or reg-name, then an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
_DIGITS = re.compile(rb"[0-9]+")
_OWS = b" \t"

# Header names compared case-insensitively; matching on these exact spellings first is faster.
_CONTENT_LENGTH = (b"content-length",)
_SLACK = 4096  # room for the request line's method, version and CRLFs beyond the measured parts

_STATE_HEAD, _STATE_BODY, _STATE_UPGRADE, _STATE_ERROR, _STATE_CLOSED, _STATE_BAD_METHOD = range(6)


class _NoCallbacks:
    """What a released parser's llhttp parser calls back: nothing."""


# Stands in for a released parser's llhttp parser; never fed (feed() stops at _STATE_CLOSED).
_INERT = httptools.HttpRequestParser(_NoCallbacks())


class RequestParser:
    """Turns the bytes a client sends into :mod:`~appserver.http.events`."""

    # One per connection: slots keep it small and its attributes fast.
    __slots__ = ("max_request_line", "max_fields", "max_field_size", "max_body", "trailing",
                 "_max_head", "_max_item", "_parser", "_events", "_state", "_error", "_head",
                 "_first_head", "_completed", "_in_method", "_method_bytes", "_bad", "_head_tail",
                 "_in_message", "_url_parts", "_url_len", "_url_done", "_line_done", "_headers",
                 "_counted", "_fields_bytes", "_head_bytes", "_body_bytes", "_overhead",
                 "_trailers", "_fresh")

    def __init__(self, *, max_request_line: int = 4094, max_fields: int = 100,
                 max_field_size: int = 8190, max_body: int = 0) -> None:
        self.max_request_line = max_request_line
        self.max_fields = max_fields
        self.max_field_size = max_field_size
        self.max_body = max_body  # 0: unlimited
        self._max_head = max_request_line + max_fields * (max_field_size + 4) + _SLACK
        self._max_item = max(max_request_line, max_field_size) + _SLACK  # one line of the head
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[Event] = deque()
        self._state = _STATE_HEAD
        self._error: ProtocolError | None = None
        self.trailing = b""  # bytes after an upgrade request's head
        self._head: RequestHead | None = None        # the last head handed out
        self._first_head: RequestHead | None = None  # the first completed in this feed() call
        self._completed = 0        # messages completed during the current feed() call
        self._in_method = False    # a read ended inside a request's method ...
        self._method_bytes = b""   # ... which began so (see _bad_method)
        self._bad: MethodScan | None = None
        self._head_tail = b""      # the last bytes of a head that spans reads
        self._reset_message()

    def _reset_message(self) -> None:
        self._in_message = False
        self._url_parts: list[bytes] = []
        self._url_len = 0
        self._url_done = False
        self._line_done = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._counted = 0  # fields measured into _fields_bytes (lazily: only for heads that span reads)
        self._fields_bytes = 0
        self._head_bytes = 0
        self._body_bytes = 0
        self._overhead = 0
        self._trailers = 0
        self._fresh = True

    # ---- public API -------------------------------------------------------------------------

    def release(self) -> None:
        """The connection is over: nothing more is parsed.  llhttp's parser holds this object's
        callbacks (bound methods), a reference cycle that would leave the parser, and the last
        request's head in it, to the cyclic garbage collector -- for a worker that closes
        every connection (sync) that is a collection every few dozen requests.  Dropping
        llhttp's parser frees them all by reference counting."""
        self._parser = _INERT
        self._state = _STATE_CLOSED
        self._events.clear()
        self._head = self._first_head = None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises :class:`ProtocolError` for input a server must reject (or, when
        events parsed before the bad bytes are queued, leaves it to ``next_event()``)."""
        # A local, not a narrowed self._error: an llhttp callback may set it during this call,
        # and the compiled build would trust mypy's "None" for the rest of the function.
        error = self._error
        if error is not None:
            raise error
        if not data:
            return  # llhttp would report an empty piece of body
        state = self._state
        if state == _STATE_UPGRADE:
            self.trailing += data
            return
        if state == _STATE_CLOSED:
            return  # RFC 9112 §9.6: no further request on this connection is processed
        if state == _STATE_BAD_METHOD:
            self._scan_bad_method(data)
            return
        while True:
            state, head0, body0, in0 = self._state, self._head, self._body_bytes, self._in_message
            self._fresh = False
            self._completed = 0
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                data = bytes(data[exc.args[0]:])
                if self._head is not None and self._head.upgrade is not None:
                    self.trailing = data
                    self._state = _STATE_UPGRADE
                    return
                if data and self._state == _STATE_HEAD:
                    continue  # an Upgrade we ignore (HTTP/1.0): the bytes after are HTTP
                return
            except httptools.HttpParserInvalidMethodError:
                self._bad_method(data, state, head0, body0, in0)
                return
            except httptools.HttpParserError as exc:
                if self._state == _STATE_CLOSED:
                    return  # llhttp refuses data after "Connection: close"; we ignore it
                self._fail(self._error or self._classify(exc))
            break
        state = self._state
        if state == _STATE_HEAD:
            if self._in_message:
                self._check_head_size(data)
        elif state == _STATE_BODY and self._head is not None and self._head.chunked:
            self._check_chunk_overhead(data, body0)

    def _check_head_size(self, data: bytes) -> None:
        """Count what the head has cost so far (see the design notes).  A call in which the
        message began is not counted: the error is bounded by one read."""
        if not self._fresh:
            self._head_bytes += len(data)
            self._line_done = self._line_done or b"\n" in data
            self._head_tail = (self._head_tail + data)[-3:]
        else:
            self._line_done = not self._completed and b"\n" in data.lstrip(b"\r\n")
            self._head_tail = data[-3:]
        if not self._url_parts:
            # A read ended inside the method: keep its start in case it turns out to be unknown.
            start = self._method_bytes if self._in_method and not self._fresh else b""
            self._method_bytes = TOKEN_TAIL.search((start + data[-16:])[-16:]).group()  # type: ignore[union-attr]
        self._in_method = not self._url_parts
        for name, value in self._headers[self._counted:]:
            self._fields_bytes += len(name) + len(value) + 4
        self._counted = len(self._headers)
        current = self._head_bytes - self._url_len - self._fields_bytes
        if self._head_bytes > self._max_head or current > self._max_item:
            if not self._line_done:
                self._fail(ProtocolError(414, "request line too long"))
            else:
                self._fail(ProtocolError(431, "request header section too large"))

    def _check_chunk_overhead(self, data: bytes, body0: int) -> None:
        """Chunk extensions and trailer fields carry no body, and httptools joins the pieces of a
        trailer field in memory as it does a header's: bytes fed without body data or a complete
        trailer field are bounded like one line of the head (to within one read)."""
        progress = self._body_bytes != body0 or len(self._headers) != self._trailers
        self._trailers = len(self._headers)
        if progress:
            self._overhead = 0
            return
        if self._fresh:
            # The message began in this read: what follows its head counts (a chunk-size line
            # and its extensions, no body yet).  Without this, a read holding the head and a
            # long extension, then one holding the body, was never measured (the limit then
            # depended on how the bytes were split).  Extensions hold no CR or LF, so the last
            # blank line in the read ends the head.
            end = data.rfind(b"\r\n\r\n")
            self._overhead = len(data) - (end + 4) if end >= 0 else 0
        else:
            self._overhead += len(data)
        if self._overhead > self._max_item:
            self._fail(ProtocolError(431, "chunk extensions or trailer section too large"))

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
        self._state = _STATE_HEAD if self._head is None or self._head.keep_alive else _STATE_CLOSED
        trailing, self.trailing = self.trailing, b""
        if trailing:
            self.feed(trailing)

    def feed_eof(self) -> None:
        """The client closed its side: an unfinished message is a 400."""
        if self._in_message and self._state not in (_STATE_UPGRADE, _STATE_ERROR):
            self._fail(ProtocolError(400, "connection closed in the middle of a request"))

    # ---- llhttp callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True

    def on_url(self, part: bytes) -> None:
        self._url_len += len(part)
        # The limit is on the whole line (as gunicorn's and nginx's are): method SP target SP
        # HTTP-version (RFC 9112 §3); the method is looked at only when the target is long.
        if self._url_len + 13 > self.max_request_line \
                and self._url_len + len(self._parser.get_method()) + 10 > self.max_request_line:
            self._raise(ProtocolError(414, "request line too long"))
        self._url_parts.append(part)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._url_done = True
        value = value.rstrip(_OWS)  # llhttp keeps trailing OWS, not part of the value (RFC 9112 §5)
        if len(self._headers) >= self.max_fields:
            self._raise(ProtocolError(431, f"more than {self.max_fields} header fields"))
        if len(name) + len(value) + 2 > self.max_field_size:
            self._raise(ProtocolError(
                431, f"header field {name[:64]!r} larger than {self.max_field_size} bytes"))
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._url_done = True
        self._fresh = True
        head = self._head = self._build_head()
        if not self._completed:
            self._first_head = head
        self._headers = []  # trailer fields (checked, then dropped) must not join the sent head
        self._state = _STATE_BODY
        self._events.append(head)

    def on_body(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self.max_body and self._body_bytes > self.max_body:
            allowed = len(data) - (self._body_bytes - self.max_body)
            if allowed > 0:  # what fits goes out first, however the body was split
                self._events.append(Body(data[:allowed]))
            self._raise(ProtocolError(413, f"request body larger than {self.max_body} bytes"))
        self._events.append(Body(data))

    def on_message_complete(self) -> None:
        self._events.append(END_OF_MESSAGE)
        self._completed += 1
        self._in_message = False  # the rest is reset when the next message begins
        head = self._head
        self._state = _STATE_HEAD if head is None or head.keep_alive else _STATE_CLOSED

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
            if version == "1.0":
                upgrade = None  # RFC 9110 §7.8: a server MUST ignore Upgrade in HTTP/1.0
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
        if method == "CONNECT":
            return
        if target[:8].lower().startswith((b"http://", b"https://")):
            # RFC 9110 §4.2.1, §4.2.4: a host is required, userinfo is an error.
            authority = re.split(rb"[/?#]", target.split(b"://", 1)[1], maxsplit=1)[0]
            if authority[:1] not in (b"", b":") and _HOST.fullmatch(authority):
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
        self._in_message = False
        if not self._events:
            raise error
        # Deferred: next_event() raises it once the queued events are consumed.

    def _classify(self, exc: httptools.HttpParserError) -> ProtocolError:
        message = str(exc)
        if "Invalid HTTP version" in message:
            return ProtocolError(505, "HTTP version not supported")
        if "Content-Length overflow" in message:
            return ProtocolError(413, "Content-Length too large")
        return ProtocolError(400, message or "malformed request")

    def _bad_method(self, data: bytes, state0: int, head0: RequestHead | None, body0: int,
                    in0: bool) -> None:
        """llhttp met a method it does not know: find where that request starts in ``data`` (the
        ``0`` values describe the parser when the call began), then read its whole token (see
        :mod:`.methods`)."""
        prefix = b""
        if not self._completed:
            in_method = state0 == _STATE_HEAD and in0 and self._in_method
            prefix = self._method_bytes if in_method else b""
            start = 0 if in_method else len(data) - len(data.lstrip(b"\r\n"))
        else:
            # Where the request in progress when the call began ends in ``data``: None when
            # that cannot be known (a chunked body).
            carried: int | None = 0
            if state0 == _STATE_BODY and head0 is not None:
                carried = None if head0.chunked else (head0.content_length or 0) - body0
            elif in0 and self._first_head is not None:
                end = end_of_head(self._head_tail, data)
                first = self._first_head
                carried = None if first.chunked else end + (first.content_length or 0)
            if carried is None:
                # A chunked body that began in an earlier read ended in this one (pipelining
                # only): its end cannot be recovered.
                self._fail(ProtocolError(400, "invalid method"))
                return
            start = carried + end_of_requests(data[carried:], self._completed - (carried > 0))
            start = len(data) - len(data[start:].lstrip(b"\r\n"))
        self._state = _STATE_BAD_METHOD
        self._in_message = True
        self._bad = MethodScan(prefix, self.max_request_line)
        self._scan_bad_method(data[start:])

    def _scan_bad_method(self, data: bytes) -> None:
        assert self._bad is not None
        error = self._bad.feed(data)
        if error is not None:
            self._fail(error)
