"""A client never chooses its REMOTE_ADDR: real servers, real nginx in front, real loopback clients.

Every client forges ``X-Forwarded-For: 6.6.6.6`` (and ``X-Forwarded-Proto: https``).  Clients
connect from 127.0.0.1 (an address in the default ``forwarded_allow_ips``) and from 127.0.0.2
(Linux routes all of 127.0.0.0/8 to lo, so binding the client socket there is enough).  In front
of the servers one nginx process serves several configurations, each in a ``server`` block:

* appending (``$proxy_add_x_forwarded_for``) over TCP, to a server with the default allow list
  and to one with ``--forwarded-allow-ips '*'``;
* replacing (``$remote_addr``, as the bundle does) over the unix socket;
* a chain of two appending proxies -- the edge binds its upstream connections to 127.0.0.3 and
  replaces X-Forwarded-Proto with "https" (a stand-in for a TLS edge), the inner one appends to
  both headers -- in front of a server with ``--forwarded-hops 2`` and one with the default 1.

The environ is built by shared code for the WSGI classes, so the matrix runs on two classes with
different connection code (sync, asyncio) and on a ``tornado.web.Application`` (its own path).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appserver.bundle.tools import find_nginx
from appserver.testing import AppServerProcess, free_port, free_ports

from .client import environ_seen

REPO = Path(__file__).resolve().parents[2]
FORGED = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
CLIENTS = ["127.0.0.1", "127.0.0.2"]
EDGE_ADDRESS = "127.0.0.3"  # the chain's edge proxy connects to the inner one from here

TORNADO_APP = """
import json
import tornado.web

class Environ(tornado.web.RequestHandler):
    def get(self):
        self.write(json.dumps({"REMOTE_ADDR": self.request.remote_ip,
                               "wsgi.url_scheme": self.request.protocol}))

application = tornado.web.Application([(r"/environ", Environ)])
"""

KINDS = {
    "sync": ["-k", "sync", "tests.behaviour.app:app"],
    "asyncio": ["-k", "asyncio", "--threads", "4", "tests.behaviour.app:app"],
    "tornado-app": ["-k", "tornado", "tornadoapp:application"],
    "asgi": ["-k", "asgi", "tests.behaviour.asgi_app:app"],
}


def ask(port: int, source: str, headers: dict[str, str] | None = None,
        host: str = "127.0.0.1") -> tuple[str, str]:
    """GET /environ from ``source``; the (REMOTE_ADDR, wsgi.url_scheme) the app saw."""
    env = environ_seen(host, port, source=source, headers=headers)
    return env["REMOTE_ADDR"], env["wsgi.url_scheme"]


# ---- processes ----------------------------------------------------------------------------------


@dataclass
class Servers:
    """The app servers of one worker kind: (TCP port, unix socket) by configuration."""

    default: tuple[int, str]
    star: tuple[int, str]
    hops2: tuple[int, str]


def start_server(kind: str, tmp: Path, name: str, *options: str) -> tuple[AppServerProcess, tuple[int, str]]:
    port, sock = free_port(), str(tmp / f"{name}.sock")
    binds = [f"127.0.0.1:{port}", f"unix:{sock}"]
    process = AppServerProcess(
        ["-w", "1", "-b", binds[0], "-b", binds[1], "--chdir", str(tmp), *options, *KINDS[kind]],
        log_path=tmp / f"{name}.log", cwd=REPO, env={"PYTHONPATH": str(REPO)})
    process.start(wait_for=binds, workers=1)
    return process, (port, sock)


NGINX_CONF = """
worker_processes 1;
daemon off;
{user}
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {run}/tmp/body;
    proxy_temp_path {run}/tmp/proxy;
    fastcgi_temp_path {run}/tmp/fastcgi;
    uwsgi_temp_path {run}/tmp/uwsgi;
    scgi_temp_path {run}/tmp/scgi;
    access_log off;
    proxy_http_version 1.1;
{servers}
}}
"""

PROXY = """
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass {upstream};
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For {forwarded_for};
            proxy_set_header X-Forwarded-Proto {forwarded_proto};
            {extra}
        }}
    }}
"""


@dataclass
class Fronts:
    """nginx's listening ports, by configuration."""

    appending: int        # -> the default server over TCP
    appending_star: int   # -> the '*' server over TCP
    replacing: int        # -> the default server over its unix socket
    chain_hops2: int      # edge -> inner -> the --forwarded-hops 2 server
    chain_hops1: int      # edge -> inner -> the default server


def nginx_servers(servers: Servers) -> tuple[Fronts, str]:
    ports = free_ports(7)  # five fronts and two inner proxies, all distinct
    fronts = Fronts(*ports[:5])
    blocks = [
        PROXY.format(listen=fronts.appending, upstream=f"http://127.0.0.1:{servers.default[0]}",
                     forwarded_for="$proxy_add_x_forwarded_for", forwarded_proto="$scheme",
                     extra=""),
        PROXY.format(listen=fronts.appending_star, upstream=f"http://127.0.0.1:{servers.star[0]}",
                     forwarded_for="$proxy_add_x_forwarded_for", forwarded_proto="$scheme",
                     extra=""),
        PROXY.format(listen=fronts.replacing, upstream=f"http://unix:{servers.default[1]}:",
                     forwarded_for="$remote_addr", forwarded_proto="$scheme", extra=""),
    ]
    for front, server, inner in ((fronts.chain_hops2, servers.hops2, ports[5]),
                                 (fronts.chain_hops1, servers.default, ports[6])):
        blocks.append(PROXY.format(listen=front, upstream=f"http://127.0.0.1:{inner}",
                                   forwarded_for="$proxy_add_x_forwarded_for",
                                   forwarded_proto="https", extra=f"proxy_bind {EDGE_ADDRESS};"))
        blocks.append(PROXY.format(listen=inner, upstream=f"http://127.0.0.1:{server[0]}",
                                   forwarded_for="$proxy_add_x_forwarded_for",
                                   forwarded_proto='"$http_x_forwarded_proto, $scheme"', extra=""))
    return fronts, "".join(blocks)


@dataclass
class Setup:
    kind: str
    servers: Servers
    fronts: Fronts


def run_nginx(run: Path, servers_text: str, ports: list[int]) -> subprocess.Popen[bytes]:
    """nginx in the foreground, in a session of its own (stopped with its process group)."""
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    (run / "tmp").mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""  # else root's workers run as nobody
    conf = run / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, run=run, servers=servers_text))
    with open(run / "nginx.out", "wb") as out:
        proc = subprocess.Popen([nginx, "-p", f"{run}/", "-c", str(conf), "-e", "stderr"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(run / 'nginx.out').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nginx not listening on {port}"
                time.sleep(0.05)
    return proc


def stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers left by a master that did not stop
    except ProcessLookupError:
        pass
    proc.wait(5)


@pytest.fixture(scope="module", params=list(KINDS))
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"forwarded-{kind}")
    (tmp / "tornadoapp.py").write_text(TORNADO_APP)
    processes: list[AppServerProcess] = []
    nginx: subprocess.Popen[bytes] | None = None
    try:
        addresses = []
        for name, options in (("default", ()), ("star", ("--forwarded-allow-ips", "*")),
                              ("hops2", ("--forwarded-hops", "2"))):
            process, address = start_server(kind, tmp, name, *options)
            processes.append(process)
            addresses.append(address)
        servers = Servers(*addresses)
        fronts, text = nginx_servers(servers)
        nginx = run_nginx(tmp / "nginx", text, [fronts.appending, fronts.appending_star,
                                                 fronts.replacing, fronts.chain_hops2,
                                                 fronts.chain_hops1])
        yield Setup(kind, servers, fronts)
    finally:
        if nginx is not None:
            stop_nginx(nginx)
        codes = [process.stop() for process in processes]
    assert codes == [0] * len(codes), [p.log_text() for p in processes]


# ---- directly connected clients ------------------------------------------------------------------


def test_a_client_outside_the_allow_list_is_its_peer_address(setup: Setup) -> None:
    assert ask(setup.servers.default[0], "127.0.0.2", FORGED) == ("127.0.0.2", "http")


def test_an_allowed_peer_is_believed_for_one_hop_only(setup: Setup) -> None:
    # A peer in the allow list is taken for a proxy: the entry it added (the rightmost) counts,
    # never the ones it passed on from its own client.
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https, http"}
    assert ask(setup.servers.default[0], "127.0.0.1", headers) == ("203.0.113.7", "http")


def test_star_allows_every_peer_but_still_one_hop(setup: Setup) -> None:
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    assert ask(setup.servers.star[0], "127.0.0.2", headers)[0] == "203.0.113.7"


def test_fewer_entries_than_hops_are_ignored(setup: Setup) -> None:
    assert ask(setup.servers.hops2[0], "127.0.0.1", FORGED) == ("127.0.0.1", "http")


def test_proxy_headers_of_other_servers_are_never_read(setup: Setup) -> None:
    # Tornado's own xheaders would take these; the server does not.
    headers = {"X-Real-Ip": "6.6.6.6", "X-Scheme": "https", "X-Forwarded-Host": "evil.example"}
    assert ask(setup.servers.default[0], "127.0.0.1", headers) == ("127.0.0.1", "http")


# ---- through nginx -----------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("front", ["appending", "appending_star", "replacing"])
def test_one_proxy_in_front(setup: Setup, front: str, client: str) -> None:
    # Before the fix, the appending configs gave 6.6.6.6: the default list skipped 127.0.0.1
    # (nginx's own entry for a loopback client), and '*' took the leftmost entry.
    assert ask(getattr(setup.fronts, front), client, FORGED) == (client, "http")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_chain_of_two_proxies_with_two_hops(setup: Setup, client: str) -> None:
    # 6.6.6.6, <client>, 127.0.0.3 -- the second entry from the right is the client the edge saw;
    # X-Forwarded-Proto "https, http": the edge's scheme.
    assert ask(setup.fronts.chain_hops2, client, FORGED) == (client, "https")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_chain_of_two_proxies_with_one_hop(setup: Setup, client: str) -> None:
    # One hop believed: the inner proxy's entry, i.e. the edge proxy's address and the inner
    # proxy's scheme.
    assert ask(setup.fronts.chain_hops1, client, FORGED) == (EDGE_ADDRESS, "http")
