"""PROXY protocol (HAProxy v1/v2) in front of HTTP, on every class over TCP and unix, with
gunicorn 27 run beside ours as the reference for the same bytes.

The header comes from the proxy-protocol package's own writer, as HAProxy would send it; the
app (``apps:environ``) answers its environ, so the test sees the REMOTE_ADDR it got.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6, ProxyResultLocal
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from .harness import HERE, Gunicorn, Launcher, Server, free_port, wait_for
from .test_master import ALL_CLASSES, FAST

APP = "apps:environ"
SOURCE = ProxyResultIPv4((ipaddress.IPv4Address("203.0.113.7"), 51000),
                         (ipaddress.IPv4Address("10.0.0.1"), 80), protocol=socket.SOCK_STREAM)
SOURCE6 = ProxyResultIPv6((ipaddress.IPv6Address("2001:db8::7"), 51001),
                          (ipaddress.IPv6Address("2001:db8::1"), 80), protocol=socket.SOCK_STREAM)
HEADERS = {
    "v1": ProxyProtocolV1().pack(SOURCE),
    "v1-tcp6": ProxyProtocolV1().pack(SOURCE6),
    "v2": ProxyProtocolV2().pack(SOURCE),
    "v2-tcp6": ProxyProtocolV2().pack(SOURCE6),
    "v2-local": ProxyProtocolV2().pack(ProxyResultLocal()),
    "none": b"",
}
EXPECTED = {"v1": "203.0.113.7", "v1-tcp6": "2001:db8::7", "v2": "203.0.113.7",
            "v2-tcp6": "2001:db8::7", "v2-local": None, "none": None}  # None: the real peer


def exchange(address: object, family: int, header: bytes, *, source: str | None = None,
             extra: bytes = b"") -> tuple[int, dict[str, str]]:
    """Send ``header``, then a GET /environ (plus ``extra`` header lines); (status, environ)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        if source:
            sock.bind((source, 0))
        sock.connect(address)
        sock.sendall(header + b"GET /environ HTTP/1.1\r\nHost: x\r\n" + extra +
                     b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, (json.loads(body) if status == 200 else {})


def tcp(port: int | None) -> tuple[object, int]:
    return ("127.0.0.1", port), socket.AF_INET


@pytest.fixture(params=ALL_CLASSES)
def server(request: pytest.FixtureRequest, launcher: Launcher) -> Server:
    return launcher.start(*request.param, *FAST, "--proxy-protocol", "auto", bind="both",
                          workers=1, app=APP)


@pytest.mark.parametrize("name", HEADERS)
def test_the_header_sets_remote_addr(server: Server, name: str) -> None:
    for address, family, peer in (tcp(server.port) + ("127.0.0.1",),
                                  (server.unix_path, socket.AF_UNIX, "")):
        status, environ = exchange(address, family, HEADERS[name])
        assert status == 200, (name, family)
        assert environ["REMOTE_ADDR"] == (EXPECTED[name] or peer), (name, family)


def test_a_peer_outside_proxy_allow_ips_gets_403(server: Server) -> None:
    # 127.0.0.2 is not in the default proxy_allow_ips (127.0.0.1, ::1); without a header it is
    # served as itself.
    address, family = tcp(server.port)
    assert exchange(address, family, HEADERS["v1"], source="127.0.0.2")[0] == 403
    status, environ = exchange(address, family, b"", source="127.0.0.2")
    assert status == 200 and environ["REMOTE_ADDR"] == "127.0.0.2"


def test_malformed_header_is_400_and_the_worker_lives(server: Server) -> None:
    address, family = tcp(server.port)
    assert exchange(address, family, b"PROXY TCP4 1.2.3.999 5.6.7.8 80 81\r\n")[0] == 400
    assert exchange(address, family, HEADERS["v2"])[0] == 200


def test_forwarded_headers_are_judged_by_the_proxied_client(server: Server) -> None:
    """After the PROXY header, the client is 203.0.113.7, which is not in forwarded_allow_ips:
    its X-Forwarded-For is not believed."""
    address, family = tcp(server.port)
    status, environ = exchange(address, family, HEADERS["v1"],
                               extra=b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n")
    assert status == 200
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == ("203.0.113.7", "http")


def test_modes_accept_only_their_version(launcher: Launcher) -> None:
    server = launcher.start("-k", "gthread", *FAST, "--proxy-protocol", "v1", bind="tcp",
                            workers=1, app=APP)
    address, family = tcp(server.port)
    assert exchange(address, family, HEADERS["v1"])[1]["REMOTE_ADDR"] == "203.0.113.7"
    # A v2 header under v1 is not a PROXY header: its bytes reach the HTTP parser (400).
    assert exchange(address, family, HEADERS["v2"])[0] == 400


# ---- gunicorn 27 as the reference ---------------------------------------------------------------


@pytest.fixture
def gunicorn_port(gunicorn: Gunicorn, workdir: Path) -> int:
    """gunicorn 27 with --proxy-protocol auto on a free port; the port."""
    port = free_port()
    gunicorn.start("-w", "1", "-b", f"127.0.0.1:{port}", "--proxy-protocol", "auto", APP,
                   cwd=workdir, env={"PYTHONPATH": str(HERE)})

    def up() -> bool:
        try:
            return exchange(*tcp(port), b"")[0] == 200
        except OSError:
            return False

    wait_for(up, 20, "gunicorn to answer",
             details=lambda: (workdir / "gunicorn.stderr").read_text(errors="replace"))
    return port


CASES = {
    **{name: (header, None) for name, header in HEADERS.items()},
    "not-allowed": (HEADERS["v1"], "127.0.0.2"),
    "bad-address": (b"PROXY TCP4 1.2.3.999 5.6.7.8 80 81\r\n", None),
    "missing-field": (b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", None),
}


# Where we answer otherwise, deliberately: (what gunicorn 27 gives, what we give, why).
DIFFERENCES = {
    "v2-local": ((200, None), (200, "127.0.0.1"),
                 "a LOCAL header (the proxy's own health check): gunicorn leaves REMOTE_ADDR "
                 "unset; the specification says to use the connection's real addresses"),
}


def test_same_answers_as_gunicorn(gunicorn_port: int, launcher: Launcher) -> None:
    ours = launcher.start("-k", "sync", *FAST, "--proxy-protocol", "auto", bind="tcp", workers=1,
                          app=APP)
    for name, (header, source) in CASES.items():
        theirs_status, theirs = exchange(*tcp(gunicorn_port), header, source=source)
        our_status, environ = exchange(*tcp(ours.port), header, source=source)
        reference = (theirs_status, theirs.get("REMOTE_ADDR"))
        answer = (our_status, environ.get("REMOTE_ADDR"))
        if name in DIFFERENCES:
            assert (reference, answer) == DIFFERENCES[name][:2], name
        else:
            assert answer == reference, name


TORNADO_APP = """
import tornado.web


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hello")


application = tornado.web.Application([(r"/", Hello)])
"""


def test_a_tornado_application_refuses_the_proxy_protocol(launcher: Launcher, workdir: Path) -> None:
    """Tornado's own HTTP server reads a tornado.web.Application's connections, so no PROXY
    header would be read: the server refuses to start, naming why, instead of ignoring it."""
    (workdir / "tornadoapp.py").write_text(TORNADO_APP)
    server = launcher.start("-k", "tornado", *FAST, "--proxy-protocol", "--chdir", str(workdir),
                            bind="tcp", workers=1, app="tornadoapp:application", wait=False)
    assert server.wait_exit(20) != 0
    assert "--proxy-protocol does not apply to a tornado.web.Application" in server.log()
