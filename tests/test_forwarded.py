"""appserver.forwarded: who may send forwarded headers, and which of their entries is believed."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from appserver.config import ServerConfig
from appserver.forwarded import ForwardedTrust, believed_entry, ip_text


@pytest.mark.parametrize(("value", "hops", "entry"), [
    ("a", 1, "a"),
    ("a, b", 1, "b"),
    ("a, b", 2, "a"),
    ("a, b", 3, None),          # fewer entries than hops: not believed at all
    ("a,,b", 2, ""),            # an empty entry still holds a position
    ("  a  ,\tb ", 2, "a"),
    ("", 1, ""),
])
def test_believed_entry(value: str, hops: int, entry: str | None) -> None:
    assert believed_entry(value, hops) == entry


@pytest.mark.parametrize(("entry", "address"), [
    ("1.2.3.4", "1.2.3.4"), ("::1", "::1"), ("2001:DB8:0::1", "2001:DB8:0::1"),
    ("[2001:db8::1]", "2001:db8::1"), ("", None), ("unknown", None), ("1.2.3.4:80", None),
    ("6.6.6.6 1.2.3.4", None), ("1.2.3", None), ("1.2.3.4\x00", None), ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
])
def test_ip_text(entry: str, address: str | None) -> None:
    assert ip_text(entry) == address


@pytest.mark.parametrize(("allow", "peer", "is_unix", "allowed"), [
    (["127.0.0.1", "::1"], "127.0.0.1", False, True),
    (["127.0.0.1", "::1"], "::1", False, True),
    (["127.0.0.1", "::1"], "127.0.0.2", False, False),
    ([], "", True, True),              # a unix-socket peer is nginx on this host
    (["*"], "203.0.113.9", False, True),
    ([" 10.0.0.1 "], "10.0.0.1", False, True),
])
def test_allows(allow: list[str], peer: str, is_unix: bool, allowed: bool) -> None:
    assert ForwardedTrust(allow).allows(peer, is_unix) is allowed


@pytest.mark.parametrize("allow", [["127.0.0.1"], ["*"], ["127.0.0.1", "6.6.6.6", "1.2.3.4"]])
def test_the_allow_list_never_changes_the_hop(allow: list[str]) -> None:
    # The old rule skipped allowed addresses from the right (and took the leftmost with '*'):
    # a client in the list, or anyone with '*', chose its address.
    trust = ForwardedTrust(allow)
    assert trust.client("6.6.6.6, 1.2.3.4, 127.0.0.1") == "127.0.0.1"
    assert ForwardedTrust(allow, hops=2).client("6.6.6.6, 1.2.3.4, 127.0.0.1") == "1.2.3.4"


def test_scheme_at_the_same_hop() -> None:
    assert ForwardedTrust(["*"]).scheme("https, http") == "http"
    assert ForwardedTrust(["*"], hops=2).scheme("https, http") == "https"
    assert ForwardedTrust(["*"], hops=2).scheme("https") is None
    assert ForwardedTrust(["*"]).scheme(" HTTPS ") == "https"
    assert ForwardedTrust(["*"]).scheme("gopher") is None


def test_hops_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ForwardedTrust([], hops=0)


def test_allow_list_takes_cidr_ranges_as_gunicorn_does() -> None:
    trust = ForwardedTrust(["10.0.0.0/8", "192.168.1.10", "fd00::/8"])
    assert trust.allows("10.1.2.3", False)
    assert trust.allows("192.168.1.10", False)
    assert trust.allows("fd12::1", False)
    assert not trust.allows("11.0.0.1", False)
    assert not trust.allows("192.168.1.11", False)
    assert not trust.allows("", False)


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "1.2.3", "nginx.internal"])
def test_allow_list_entries_that_are_no_address_are_errors(entry: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(entry))):
        ForwardedTrust(["127.0.0.1", entry])
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        ServerConfig(forwarded_allow_ips=["127.0.0.1", entry])
