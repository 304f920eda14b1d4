"""The PROXY header reader: v1 and v2 as HAProxy writes them (built here with the proxy-protocol
package's own writer), whole, byte by byte and with the HTTP request after them."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6, ProxyResultLocal, ProxyResultUnknown
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from appserver.http.events import ProtocolError
from appserver.http.proxyheader import ProxyHeaderReader

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
V4 = ProxyResultIPv4((ipaddress.IPv4Address("203.0.113.7"), 51000),
                     (ipaddress.IPv4Address("10.0.0.1"), 80), protocol=socket.SOCK_STREAM)
V6 = ProxyResultIPv6((ipaddress.IPv6Address("2001:db8::7"), 51000),
                     (ipaddress.IPv6Address("2001:db8::1"), 443), protocol=socket.SOCK_STREAM)
HEADERS = {
    "v1-tcp4": ("v1", ProxyProtocolV1().pack(V4), ("203.0.113.7", 51000)),
    "v1-tcp6": ("v1", ProxyProtocolV1().pack(V6), ("2001:db8::7", 51000)),
    "v1-unknown": ("v1", b"PROXY UNKNOWN\r\n", None),
    "v2-tcp4": ("v2", ProxyProtocolV2().pack(V4), ("203.0.113.7", 51000)),
    "v2-tcp6": ("v2", ProxyProtocolV2().pack(V6), ("2001:db8::7", 51000)),
    "v2-local": ("v2", ProxyProtocolV2().pack(ProxyResultLocal()), None),
}


def feed_all(reader: ProxyHeaderReader, data: bytes, step: int) -> bytes:
    out = None
    for i in range(0, len(data), step):
        out = reader.feed(data[i:i + step])
        if out is not None:
            rest = data[i + step:]
            return out + rest
    raise AssertionError("the header never completed")


@pytest.mark.parametrize("name", HEADERS)
@pytest.mark.parametrize("mode", ["own", "auto"])
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_headers_are_read_whole_and_in_pieces(name: str, mode: str, step: int) -> None:
    version, header, source = HEADERS[name]
    reader = ProxyHeaderReader(version if mode == "own" else "auto", allowed=True)  # type: ignore[arg-type]
    assert feed_all(reader, header + REQUEST, step) == REQUEST
    assert reader.source == source
    assert reader.result is not None


@pytest.mark.parametrize("mode", ["v1", "v2", "auto"])
@pytest.mark.parametrize("step", [1, 3, 4096])
def test_no_header_is_plain_http(mode: str, step: int) -> None:
    reader = ProxyHeaderReader(mode, allowed=False)  # type: ignore[arg-type]
    assert feed_all(reader, REQUEST, step) == REQUEST
    assert reader.source is None and reader.result is None


def test_the_other_version_is_not_read() -> None:
    # A v1 header under "v2" is not a PROXY header: it goes to the HTTP parser (a 400 there).
    header = ProxyProtocolV1().pack(V4)
    assert ProxyHeaderReader("v2", allowed=True).feed(header) == header


def test_a_peer_not_allowed_gets_403() -> None:
    reader = ProxyHeaderReader("auto", allowed=False)
    with pytest.raises(ProtocolError) as caught:
        reader.feed(ProxyProtocolV1().pack(V4) + REQUEST)
    assert caught.value.status == 403


@pytest.mark.parametrize("bad", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",              # a field missing
    b"PROXY TCP4 1.2.3.999 5.6.7.8 80 81\r\n",         # not an address
    b"PROXY TCP4 1.2.3.4 5.6.7.8 80 70000\r\n",        # port out of range
    b"PROXY SCTP 1.2.3.4 5.6.7.8 80 81\r\n",           # no such family
    b"PROXY TCP4 " + b"1" * 200,                       # no CRLF within 107 bytes
    ProxyProtocolV2().pack(V4)[:12] + b"\x11\x11\x00\x0c" + bytes(12),  # v2 version bits wrong
])
def test_malformed_headers_are_400(bad: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        ProxyHeaderReader("auto", allowed=True).feed(bad + REQUEST)
    assert caught.value.status == 400


def test_unknown_v1_keeps_the_peer() -> None:
    reader = ProxyHeaderReader("v1", allowed=True)
    assert reader.feed(b"PROXY UNKNOWN\r\n" + REQUEST) == REQUEST
    assert isinstance(reader.result, ProxyResultUnknown) and reader.source is None


def test_off_reads_nothing() -> None:
    with pytest.raises(ValueError):
        ProxyHeaderReader("off", allowed=True)


def test_a_v2_header_for_another_transport_keeps_the_peer() -> None:
    unspecified = ProxyResultIPv4((ipaddress.IPv4Address("203.0.113.7"), 1),
                                  (ipaddress.IPv4Address("10.0.0.1"), 80))  # protocol UNSPEC
    reader = ProxyHeaderReader("v2", allowed=True)
    assert reader.feed(ProxyProtocolV2().pack(unspecified) + REQUEST) == REQUEST
    assert reader.result is not None and reader.source is None
