"""Property tests for RequestParser: only ProtocolError ever escapes, and how the bytes are split
never changes the events or the status.  Derandomized, so a run is repeatable."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .feeding import Data, End, Head, Item, outcome

SETTINGS = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


splits = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)

# Pieces of HTTP, so that random sequences reach deep into the parser rather than failing at byte 0.
FRAGMENTS = [
    b"GET", b"POST", b"FOO", b"PU", b"get", b" ", b"  ", b"/", b"/a?b=c", b"*", b"http://h/",
    b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"\r\n", b"\r\n\r\n", b"\r", b"\n", b"Host: a",
    b"Content-Length: ", b"3", b"0", b"5", b"-1", b"Transfer-Encoding: chunked", b"gzip", b",",
    b"Connection: close", b"Connection: keep-alive", b"Upgrade: websocket", b"Connection: upgrade",
    b"Expect: 100-continue", b":", b";ext=1", b"abc", b"\x00", b"\t", b"\xff", b"X-Y: z",
]
soup = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)


@SETTINGS
@given(st.binary(max_size=400), splits)
def test_arbitrary_bytes(data: bytes, points: list[int]) -> None:
    # outcome() catches ProtocolError only: anything else fails the test.
    whole = outcome([data], eof=True)
    assert outcome(cut(data, points), eof=True) == whole


@SETTINGS
@given(soup, splits)
def test_http_fragments(data: bytes, points: list[int]) -> None:
    whole = outcome([data], eof=True)
    assert outcome(cut(data, points), eof=True) == whole
    assert outcome(cut(data, points), eof=True, decline=True) == outcome([data], eof=True, decline=True)


# ---- valid requests ---------------------------------------------------------------------------

tchar = st.sampled_from("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
token = st.text(tchar, min_size=1, max_size=12)
vchar = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
value = st.builds(lambda a, b: a + b, st.text(vchar, max_size=10),
                  st.text(st.sampled_from("\t abc"), max_size=5).map(str.rstrip))
path = st.text(st.sampled_from("abcXYZ019-._~%!$&'()*+,;=:@/"), max_size=20)


@st.composite
def request(draw: st.DrawFn, last: bool, chunked: bool = True) -> tuple[bytes, list[Item]]:
    """One well-formed request and the events it must produce."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"]))
    target = ("/" + draw(path) + draw(st.sampled_from(["", "?", "?q=1&r"]))).encode()
    version = draw(st.sampled_from(["1.1", "1.0"]))
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"h")]
    for name, text in draw(st.lists(st.tuples(token, value), max_size=4)):
        if name.lower() not in ("host", "content-length", "transfer-encoding", "connection",
                                "expect", "upgrade"):
            headers.append((name.encode(), text.strip().encode()))
    keep_alive = not last or draw(st.booleans())
    if version == "1.0" and keep_alive:
        headers.append((b"Connection", b"keep-alive"))
    elif version == "1.1" and not keep_alive:
        headers.append((b"Connection", b"close"))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "1.1" and chunked
                                   else ["none", "length"]))
    if framing == "none":
        body = b""
    content_length = len(body) if framing == "length" else None
    if framing == "length":
        headers.append((b"Content-Length", b"%d" % len(body)))
    expect = framing != "none" and version == "1.1" and draw(st.booleans())
    if expect:
        headers.append((b"Expect", b"100-continue"))
    if framing == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        sizes = draw(st.lists(st.integers(1, 9), max_size=6))
        chunks, rest = [], body
        for size in sizes:
            if rest:
                piece, rest = rest[:size], rest[size:]
                ext = draw(st.sampled_from([b"", b";a", b";a=b", b';a="q q"']))
                chunks.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        body = body[:len(body) - len(rest)]
        trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n"]))
        payload = b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"
    else:
        payload = body
    order = draw(st.permutations(headers[1:]))
    headers = [headers[0], *order]
    data = b"%s %s HTTP/%s\r\n" % (method.encode(), target, version.encode())
    data += b"".join(b"%s: %s\r\n" % pair for pair in headers) + b"\r\n" + payload
    head = Head(method, target, version, tuple(headers), keep_alive, expect, content_length,
                framing == "chunked", None, b"h")
    return data, [head, *([Data(body)] if body else []), End()]


@st.composite
def pipeline(draw: st.DrawFn, chunked_last_only: bool = False) -> tuple[bytes, list[Item]]:
    count = draw(st.integers(1, 4))
    parts = [draw(request(last=i == count - 1, chunked=not chunked_last_only or i == count - 1))
             for i in range(count)]
    return b"".join(p[0] for p in parts), [e for p in parts for e in p[1]]


@SETTINGS
@given(pipeline(), splits)
def test_valid_requests_split_anywhere(case: tuple[bytes, list[Item]], points: list[int]) -> None:
    data, expected = case
    assert outcome([data], eof=True).events == expected
    split = outcome(cut(data, points), eof=True)
    assert (split.status, split.events) == (None, expected)


# A chunked request is last: an unknown method right after a chunked request that spans reads is
# the parser's one known split-dependence (see test_parser_errors.py, the xfail test).
@SETTINGS
@given(pipeline(chunked_last_only=True), st.integers(min_value=0), st.binary(min_size=1, max_size=1),
       splits)
def test_one_byte_changed_split_anywhere(case: tuple[bytes, list[Item]], where: int, byte: bytes,
                                         points: list[int]) -> None:
    data, _ = case
    index = where % len(data)
    for mutated in (data[:index] + byte + data[index + 1:], data[:index] + byte + data[index:],
                    data[:index] + data[index + 1:]):
        assert outcome(cut(mutated, points), eof=True) == outcome([mutated], eof=True)
