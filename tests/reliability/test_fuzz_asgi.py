"""Fuzzing the ASGI response path: arbitrary ``http.response.start`` / ``http.response.body``
messages through appserver/asgi.py and the WSGI framing it shares (``wsgi.Response``).

The property, for any message an app may send (statuses of every type and range; headers that
are not pairs, not bytes, or carry CR, LF, NUL, non-token names and hop-by-hop fields; bodies of
any type; ``more_body`` of any truthiness), applied in the order the asyncio worker applies them
(appserver/workers/aio_asgi.py): the only exception that escapes is ``ResponseError`` (the
worker's 500), and whatever is accepted goes on the wire as one well-formed head -- CRLF line
ends only, no NUL, no header line without a colon -- followed by no more body bytes than a
Content-Length allows.  Bounded and derandomized, as test_fuzz.py; the counts go to the "fuzz"
table.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from appserver.asgi import check_body, start_response
from appserver.wsgi import Response, ResponseError
from tests.reliability.report import Recorder
from tests.reliability.test_fuzz import Tally, bounded

EXAMPLES = 1500
TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

names = st.one_of(st.sampled_from([b"content-type", b"Content-Length", b"content-length",
                                   b"transfer-encoding", b"connection", b"date", b"x-a",
                                   b"set-cookie", b"upgrade", b"keep-alive", b"trailer"]),
                  st.binary(max_size=12))
values = st.one_of(st.sampled_from([b"text/plain", b"0", b"5", b"-1", b" 7", b"close",
                                    b"chunked", b"a\r\nx: y", b"a\nb", b"\x00", b"keep-alive"]),
                   st.binary(max_size=16))
odd = st.one_of(st.none(), st.integers(), st.text(max_size=6), st.floats(allow_nan=False))
headers = st.one_of(
    st.lists(st.tuples(names, values), max_size=6),
    st.lists(st.one_of(st.tuples(names, values), st.lists(names, max_size=3),
                       st.tuples(st.text(max_size=6), st.text(max_size=6)), odd), max_size=4),
    odd)
statuses = st.one_of(st.integers(-5, 1100), st.sampled_from([200, 204, 304, 101, 404, 500]),
                     st.booleans(), odd)
bodies = st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(bytearray),
                   st.binary(max_size=40).map(memoryview), odd)
body_messages = st.lists(st.fixed_dictionaries({"body": bodies, "more_body": st.one_of(
    st.booleans(), odd)}), min_size=1, max_size=4)


def respond(method: str, version: str, start: dict[str, Any],
            messages: list[dict[str, Any]]) -> tuple[bytes, int]:
    """The bytes written and the body bytes sent, as the asyncio worker frames them."""
    response = Response(lambda data: None, method, version, True)
    start_response(response, start)
    out = b""
    for message in messages:
        data, more = check_body(message)
        if not more:
            if response.headers_sent:
                out += response.frame(data) + response.finish()
            else:
                out += response.head(len(data)) + response.frame(data) + response.finish()
            break
        out += response.frame(data) if response.headers_sent else \
            response.head() + response.frame(data)
    return out, response.bytes_sent


def check_wire(out: bytes, sent: int) -> None:
    head, sep, _ = out.partition(b"\r\n\r\n")
    if not sep:
        assert out == b"", out  # no final message yet: nothing may have gone out but a head
        return
    assert b"\x00" not in head and b"\r" not in head.replace(b"\r\n", b"") \
        and b"\n" not in head.replace(b"\r\n", b""), head
    status_line, *lines = head.split(b"\r\n")
    assert re.fullmatch(rb"HTTP/1\.[01] \d{3} .*", status_line), status_line
    length = None
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon and TOKEN.fullmatch(name), line
        if name.lower() == b"content-length":
            assert length is None, head  # one Content-Length
            length = int(value)
    if length is not None:
        assert sent <= length, (sent, length)


def test_asgi_response_messages_only_response_errors_escape(reliability: Recorder) -> None:
    tally = Tally()

    @bounded(EXAMPLES)
    @given(st.sampled_from(["GET", "HEAD", "POST"]), st.sampled_from(["1.1", "1.0"]),
           statuses, headers, body_messages)
    def prop(method: str, version: str, status: Any, head: Any,
             messages: list[dict[str, Any]]) -> None:
        with tally.attempt(ResponseError):
            try:
                out, sent = respond(method, version, {"type": "http.response.start",
                                                      "status": status, "headers": head},
                                    messages)
            except ResponseError:
                return
            check_wire(out, sent)

    try:
        prop()
    finally:
        reliability.record(
            "fuzz", target="ASGI response messages (appserver/asgi.py + wsgi.Response framing)",
            tool="hypothesis", inputs=tally.inputs, escaped=tally.escaped,
            **{"documented errors": "ResponseError (a 500)"})
