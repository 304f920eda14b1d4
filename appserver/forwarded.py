"""Which proxy-added facts (X-Forwarded-For, X-Forwarded-Proto) are believed: a pure rule.

Design note (trust).  Two settings answer two different questions:

* ``forwarded_allow_ips`` says *which peers* may send the headers at all (``*``: every peer; a
  unix-socket peer, i.e. nginx on the same host, always may).  A header from any other peer is
  ignored whole.
* ``forwarded_hops`` says *how many* entries, counted from the right, were added by proxies.  The
  entry that many places from the right is believed; everything to its left was sent by the
  client (or by proxies nobody vouched for) and is ignored, whatever addresses it names.

Every proxy that appends (nginx's ``$proxy_add_x_forwarded_for``) writes the address *it* saw at
the right end; everything to its left is what its own client sent.  So with one proxy in front
(the default, ``forwarded_hops = 1``) only the rightmost entry is the proxy's; a chain of two
appending proxies writes the two rightmost, and so on.  An earlier rule skipped every entry
that was in ``forwarded_allow_ips`` and took the next one: a client whose own address was in the
list (a loopback client behind a loopback nginx) could then name any address, and with ``*`` the
leftmost entry -- the client's own text -- was taken.  This is Werkzeug ProxyFix's ``x_for=N``:
fewer than N entries means the header did not come through N proxies, and it is ignored.
The same position is read from X-Forwarded-Proto.  X-Forwarded-Host is never read: the Host
header the proxy sends is the host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_list(allow: Iterable[str]) -> tuple[bool, frozenset[str], tuple[Network, ...]]:
    """``*``, addresses and CIDR ranges (as gunicorn 24.1+ takes them): (every peer?, exact
    addresses, ranges).  Raises ValueError naming an entry that is none of these."""
    allow_all = False
    exact: set[str] = set()
    networks: list[Network] = []
    for raw in allow:
        item = raw.strip()
        if not item:
            continue
        if item == "*":
            allow_all = True
        elif "/" in item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an address, a CIDR range or '*'") from None
        elif ip_text(item) is None:
            raise ValueError(f"{item!r} is not an address, a CIDR range or '*'")
        else:
            exact.add(item)
    return allow_all, frozenset(exact), tuple(networks)


class AllowList:
    """Peers allowed to do something (``forwarded_allow_ips``, ``proxy_allow_ips``): ``*``,
    addresses and CIDR ranges.  A unix-socket peer (nginx on the same host) always is, as in
    gunicorn: it has no address to check."""

    __slots__ = ("allow_all", "allowed", "networks")

    def __init__(self, allow: Iterable[str]) -> None:
        self.allow_all, self.allowed, self.networks = parse_allow_list(allow)

    def allows(self, peer_ip: str, is_unix: bool) -> bool:
        if is_unix or self.allow_all or peer_ip in self.allowed:
            return True
        if not self.networks or not peer_ip:
            return False
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class ForwardedTrust(AllowList):
    """Whose forwarded headers are read (``allow``) and how many hops of them are believed.
    ``allows()`` says whether a peer may set the headers at all, never which entry counts."""

    __slots__ = ("hops",)

    def __init__(self, allow: Iterable[str], hops: int = 1) -> None:
        if hops < 1:
            raise ValueError(f"forwarded hops must be at least 1, got {hops}")
        super().__init__(allow)
        self.hops = hops

    def client(self, forwarded_for: str) -> str | None:
        """The client address at the believed hop of an X-Forwarded-For value, or None when the
        header has fewer entries than hops or the entry there is not an IP address."""
        entry = believed_entry(forwarded_for, self.hops)
        return None if entry is None else ip_text(entry)

    def scheme(self, forwarded_proto: str) -> str | None:
        """"http" or "https" from the believed hop of an X-Forwarded-Proto value, else None."""
        entry = believed_entry(forwarded_proto, self.hops)
        if entry is None:
            return None
        entry = entry.lower()
        return entry if entry in ("http", "https") else None


def believed_entry(value: str, hops: int) -> str | None:
    """The entry ``hops`` places from the right of a comma-separated header value (stripped),
    or None when there are fewer entries.  Empty entries count: a position is a position."""
    entries = value.split(",")
    if len(entries) < hops:
        return None
    return entries[-hops].strip()


def ip_text(entry: str) -> str | None:
    """``entry`` when it is an IPv4 or IPv6 address (``[v6]`` brackets dropped), else None.
    inet_pton, not ipaddress: this runs for every request behind a proxy, and is ~15x faster."""
    if entry.startswith("[") and entry.endswith("]"):
        entry = entry[1:-1]
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in entry else socket.AF_INET, entry)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    return entry
