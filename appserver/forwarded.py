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

Design note (scheme).  gunicorn's ``secure_scheme_headers`` maps header names to the value that
means "https"; a listed header with any other value means "http", and two listed headers that
disagree make the request a 400 ("contradictory scheme headers"), so that a client cannot add a
header the proxy forgot to clear and win.  We keep that rule and put the hop rule inside it:
X-Forwarded-Proto, when listed, votes with the entry at the believed hop (compared without
regard to case, as scheme names are; fewer entries than hops: no vote), so a chain of appending
proxies still works, and the default mapping gives exactly the old behaviour for requests that
carry no other listed header.  Every other listed header is a flag one proxy sets, not a list:
each of its field lines votes whole, compared exactly, as gunicorn compares.  A mapping without
X-Forwarded-Proto ignores it (a proxy that sends ``X-Forwarded-Ssl: on`` only).

Design note (forwarder headers).  Header names with an underscore are dropped from the environ
(``header_map``, as nginx does: ``X_Forwarded_For`` would share ``HTTP_X_FORWARDED_FOR`` with
``X-Forwarded-For``).  gunicorn's ``forwarder_headers`` lets a trusted peer send the listed ones
(``SCRIPT_NAME``, ``PATH_INFO``, ``REMOTE_USER``...): they reach the environ as ``HTTP_<NAME>``,
and a ``SCRIPT_NAME`` header also sets ``SCRIPT_NAME`` (the app's mount point behind the proxy).
From any other peer they fall under ``header_map`` like every underscore name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping

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


# gunicorn's defaults (secure_scheme_headers, forwarder_headers).
DEFAULT_SCHEME_HEADERS = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                          "X-FORWARDED-SSL": "on"}
DEFAULT_FORWARDER_HEADERS = ("SCRIPT_NAME", "PATH_INFO")
PROTO = "X-FORWARDED-PROTO"


class SchemeConflict(ValueError):
    """Two listed scheme headers disagree (gunicorn's InvalidSchemeHeaders: a 400)."""

    def __init__(self) -> None:
        super().__init__("contradictory scheme headers")


def environ_key(header: str) -> str:
    """The environ key of an upper-case header name without "_": ``HTTP_X_FORWARDED_SSL``."""
    return "HTTP_" + header.replace("-", "_")


class ForwardedTrust(AllowList):
    """Whose forwarded headers are read (``allow``), how many hops of them are believed, which
    headers tell the scheme (``scheme_headers``: name -> the value meaning https) and which
    underscore headers a trusted peer may pass (``forwarder_headers``; "*": all).
    ``allows()`` says whether a peer may set the headers at all, never which entry counts."""

    __slots__ = ("hops", "scheme_headers", "forwarder_headers", "forward_all", "scheme_keys")

    def __init__(self, allow: Iterable[str], hops: int = 1,
                 scheme_headers: Mapping[str, str] | None = None,
                 forwarder_headers: Iterable[str] = DEFAULT_FORWARDER_HEADERS) -> None:
        if hops < 1:
            raise ValueError(f"forwarded hops must be at least 1, got {hops}")
        super().__init__(allow)
        self.hops = hops
        mapping = DEFAULT_SCHEME_HEADERS if scheme_headers is None else scheme_headers
        self.scheme_headers = {name.strip().upper(): value for name, value in mapping.items()}
        self.forwarder_headers = frozenset(name.strip().upper() for name in forwarder_headers)
        self.forward_all = "*" in self.forwarder_headers
        # The environ keys of the listed scheme headers (those without "_"; the others are
        # looked up by name where underscore names are handled).
        self.scheme_keys = {environ_key(name): name for name in self.scheme_headers
                            if "_" not in name}

    def forwards(self, name: str) -> bool:
        """A trusted peer may pass the underscore header ``name`` (upper case) to the app."""
        return self.forward_all or name in self.forwarder_headers

    def scheme_of(self, lines: Iterable[tuple[str, str]]) -> str | None:
        """The scheme the listed headers present in a request say: ``lines`` are (upper-case
        name, value) for each field line of a listed header, in order.  None when no line
        votes (the connection's own scheme stands); SchemeConflict when they disagree."""
        votes: set[str] = set()
        proto: list[str] = []
        for name, value in lines:
            expected = self.scheme_headers.get(name)
            if expected is None:
                continue
            if name == PROTO:
                proto.append(value)  # read as one list below (RFC 9110 §5.3)
            else:
                votes.add("https" if value.strip(" \t") == expected else "http")
        if proto:
            entry = believed_entry(",".join(proto), self.hops)
            if entry is not None:
                votes.add("https" if entry.lower() == self.scheme_headers[PROTO].lower()
                          else "http")
        if len(votes) > 1:
            raise SchemeConflict()
        return votes.pop() if votes else None

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
