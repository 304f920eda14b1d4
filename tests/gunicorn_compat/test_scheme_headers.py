"""gunicorn's secure_scheme_headers, forwarder_headers and header_map: the pure rule
(appserver.forwarded, appserver.wsgi), then real servers spoken to straight over the socket,
each request sent to gunicorn 27 as well where the answer is meant to be the same.

Clients connect from 127.0.0.1 (in the default forwarded_allow_ips: a trusted proxy) and from
127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo): an untrusted client, whose headers are
never believed.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appserver.forwarded import ForwardedTrust, SchemeConflict
from appserver.http import ProtocolError
from appserver.wsgi import InputStream, WSGIContext, build_environ

from ..server.harness import Gunicorn, Launcher, Server, free_port, listening, wait_for
from ..test_wsgi import parse_head

TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"
APPS = Path(__file__).resolve().parents[1] / "server"


# ---- the pure rule ---------------------------------------------------------------------------


def scheme(lines: list[tuple[str, str]], mapping: dict[str, str] | None = None,
           hops: int = 1) -> str | None:
    return ForwardedTrust(["*"], hops, mapping).scheme_of(lines)


@pytest.mark.parametrize(("lines", "expected"), [
    ([], None),                                            # nothing listed: the connection's scheme
    ([("X-FORWARDED-PROTO", "https")], "https"),
    ([("X-FORWARDED-PROTO", "http")], "http"),
    ([("X-FORWARDED-PROTO", "HTTPS")], "https"),          # scheme names ignore case (ours)
    ([("X-FORWARDED-PROTO", "gopher")], "http"),          # any other value means http
    ([("X-FORWARDED-SSL", "on")], "https"),
    ([("X-FORWARDED-SSL", "off")], "http"),
    ([("X-FORWARDED-SSL", "ON")], "http"),                # exact, as gunicorn compares
    ([("X-FORWARDED-PROTOCOL", "ssl")], "https"),
    ([("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "on")], "https"),
    ([("X-FORWARDED-PROTO", "http"), ("X-FORWARDED-PROTOCOL", "tcp")], "http"),
    ([("X-ARR-SSL", "on")], None),                        # not listed
])
def test_default_mapping(lines: list[tuple[str, str]], expected: str | None) -> None:
    assert scheme(lines) == expected


@pytest.mark.parametrize("lines", [
    [("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "off")],
    [("X-FORWARDED-PROTO", "http"), ("X-FORWARDED-SSL", "on")],
    [("X-FORWARDED-PROTOCOL", "ssl"), ("X-FORWARDED-PROTO", "http")],
    [("X-FORWARDED-SSL", "on"), ("X-FORWARDED-SSL", "off")],   # one header, two lines
    [("X-FORWARDED-PROTO", "gopher"), ("X-FORWARDED-SSL", "on")],
])
def test_contradictory_headers(lines: list[tuple[str, str]]) -> None:
    with pytest.raises(SchemeConflict, match="contradictory scheme headers"):
        scheme(lines)


def test_x_forwarded_proto_keeps_the_hop_rule() -> None:
    # Appending proxies: one vote, from the believed entry; the client's entries never count.
    proto = [("X-FORWARDED-PROTO", "https, http")]
    assert scheme(proto) == "http"
    assert scheme(proto, hops=2) == "https"
    assert scheme([("X-FORWARDED-PROTO", "https")], hops=2) is None   # fewer entries than hops
    # Repeated lines are one list (RFC 9110 §5.3), not two votes.
    assert scheme([("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-PROTO", "http")]) == "http"
    # With the hop rule a chain's inner "http" is no contradiction of the edge's X-Forwarded-Ssl.
    assert scheme([*proto, ("X-FORWARDED-SSL", "on")], hops=2) == "https"


def test_a_custom_mapping_replaces_the_default() -> None:
    ssl_only = {"X-Forwarded-Ssl": "on"}  # names in any case
    assert scheme([("X-FORWARDED-PROTO", "https")], ssl_only) is None
    assert scheme([("X-FORWARDED-PROTO", "https"), ("X-FORWARDED-SSL", "on")], ssl_only) == "https"
    arr = {"X-ARR-SSL": "on"}
    assert scheme([("X-ARR-SSL", "on")], arr) == "https"
    assert scheme([("X-FORWARDED-SSL", "on")], arr) is None
    assert scheme([("X-FORWARDED-PROTO", "https")], {}) is None




def environ_for(target: str, *headers: str, peer: str = TRUSTED, **context: Any) -> dict[str, Any]:
    raw = f"GET {target} HTTP/1.1\r\nHost: a\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    ctx = WSGIContext(multithread=False, multiprocess=False, trusted_ips=["127.0.0.1"], **context)
    return build_environ(ctx, parse_head(raw.encode()), InputStream(lambda: b""),
                         peer=(peer, 4000), local=("127.0.0.1", 80), is_unix=False)


def test_the_environ_takes_the_scheme_from_trusted_peers_only() -> None:
    assert environ_for("/", "X-Forwarded-Ssl: on")["wsgi.url_scheme"] == "https"
    assert environ_for("/", "X-Forwarded-Ssl: on", peer=UNTRUSTED)["wsgi.url_scheme"] == "http"
    with pytest.raises(ProtocolError) as caught:
        environ_for("/", "X-Forwarded-Proto: https", "X-Forwarded-Ssl: off")
    assert caught.value.status == 400
    # From an untrusted peer nothing is read, so nothing contradicts.
    env = environ_for("/", "X-Forwarded-Proto: https", "X-Forwarded-Ssl: off", peer=UNTRUSTED)
    assert env["wsgi.url_scheme"] == "http"
    custom = environ_for("/", "X-Arr-Ssl: on", "X-Forwarded-Proto: http",
                         scheme_headers={"X-ARR-SSL": "on"})
    assert custom["wsgi.url_scheme"] == "https"
    assert custom["SERVER_PORT"] == "443"


def test_forwarder_headers_in_the_environ() -> None:
    env = environ_for("/app/page", "SCRIPT_NAME: /app/", "PATH_INFO: /x", "REMOTE_USER: alice")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/page")
    assert (env["HTTP_SCRIPT_NAME"], env["HTTP_PATH_INFO"]) == ("/app/", "/x")
    assert "HTTP_REMOTE_USER" not in env and "REMOTE_USER" not in env  # not listed by default
    env = environ_for("/app/page", "SCRIPT_NAME: /app", "REMOTE_USER: alice",
                      forwarder_headers=["SCRIPT_NAME", "REMOTE_USER"])
    assert env["HTTP_REMOTE_USER"] == "alice" and "REMOTE_USER" not in env  # as gunicorn
    # Not from an untrusted peer: dropped like any underscore header.
    env = environ_for("/app/page", "SCRIPT_NAME: /app", peer=UNTRUSTED)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/app/page")
    assert "HTTP_SCRIPT_NAME" not in env
    # A path outside the mount point is served as it is (gunicorn answers 500).
    env = environ_for("/other", "SCRIPT_NAME: /app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/other")
    env = environ_for("/x", "X_Anything: 1", forwarder_headers=["*"])
    assert env["HTTP_X_ANYTHING"] == "1"


def test_header_map() -> None:
    assert "HTTP_X_FOO" not in environ_for("/", "X_Foo: 1")
    assert environ_for("/", "X_Foo: 1", "X-Foo: 2", header_map="dangerous")["HTTP_X_FOO"] == "2,1"
    with pytest.raises(ProtocolError) as caught:
        environ_for("/", "X_Foo: 1", header_map="refuse", peer=UNTRUSTED)
    assert caught.value.status == 400
    # A trusted forwarder header is no refusal.
    assert environ_for("/a", "SCRIPT_NAME: /a", header_map="refuse")["SCRIPT_NAME"] == "/a"
    # "dangerous" maps, but never lets an untrusted peer set SCRIPT_NAME (gunicorn does).
    env = environ_for("/a/b", "SCRIPT_NAME: /a", header_map="dangerous", peer=UNTRUSTED)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["HTTP_SCRIPT_NAME"]) == ("", "/a/b", "/a")


# ---- real servers, and gunicorn 27 beside them -------------------------------------------------


@dataclass
class Pair:
    ours: int
    gunicorn: int


CONFIGS: dict[str, tuple[list[str], str]] = {
    # name: (command-line options for both servers, a gunicorn.conf.py for both)
    "default": ([], ""),
    "arr": ([], 'secure_scheme_headers = {"X-ARR-SSL": "on"}\n'),
    "refuse": (["--forwarder-headers", "SCRIPT_NAME,REMOTE_USER", "--header-map", "refuse"], ""),
    "dangerous": (["--header-map", "dangerous"], ""),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pair]]:
    root = tmp_path_factory.mktemp("scheme")
    launcher, gunicorn = Launcher(root / "ours"), Gunicorn(root)
    (root / "ours").mkdir()
    try:
        pairs: dict[str, Pair] = {}
        waiting = []
        for name, (options, conf) in CONFIGS.items():
            run = root / name
            run.mkdir()
            (run / "gunicorn.conf.py").write_text(conf)
            port = free_port()
            gunicorn.start("-w", "1", "-b", f"127.0.0.1:{port}", *options, "apps:environ", cwd=run,
                           env={"PYTHONPATH": str(APPS)})
            server = launcher.start("-k", "sync", "-c", str(run / "gunicorn.conf.py"), *options,
                                    bind="tcp", workers=1, app="apps:environ", wait=False)
            waiting.append(server)
            assert server.port is not None
            pairs[name] = Pair(server.port, port)
        for server in waiting:
            server.wait_workers(1, timeout=20)
        for pair in pairs.values():
            wait_for(lambda p=pair: listening(p.ours) and listening(p.gunicorn), 20,
                     "both servers to listen")
        yield pairs
    finally:
        gunicorn.close()
        launcher.close()


@dataclass
class Answer:
    status: int
    environ: dict[str, str]


def ask(port: int, headers: list[str], *, source: str = TRUSTED, target: str = "/",
        extra: bytes = b"") -> Answer:
    """One request straight to the socket, the connection closed after it."""
    close = [] if any(h.lower().startswith("connection:") for h in headers) else ["Connection: close"]
    raw = (f"GET {target} HTTP/1.1\r\nHost: t\r\n"
           + "".join(h + "\r\n" for h in [*close, *headers]) + "\r\n").encode() + extra
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(raw)
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    environ = json.loads(body) if status == 200 else {}
    return Answer(status, environ)


def both(pair: Pair, headers: list[str], **kwargs: Any) -> Answer:
    """Ask both servers; their answers must agree (status, scheme); ours is returned."""
    ours, theirs = ask(pair.ours, headers, **kwargs), ask(pair.gunicorn, headers, **kwargs)
    assert ours.status == theirs.status, (headers, ours, theirs)
    assert ours.environ.get("wsgi.url_scheme") == theirs.environ.get("wsgi.url_scheme"), headers
    return ours


@pytest.mark.parametrize(("source", "headers", "expected"), [
    (TRUSTED, [], "http"),
    (TRUSTED, ["X-Forwarded-Proto: https"], "https"),
    (TRUSTED, ["X-Forwarded-Proto: http"], "http"),
    (TRUSTED, ["X-Forwarded-Ssl: on"], "https"),
    (TRUSTED, ["X-Forwarded-Protocol: ssl"], "https"),
    (TRUSTED, ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: on"], "https"),
    (TRUSTED, ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: off"], 400),
    (TRUSTED, ["X-Forwarded-Proto: http", "X-Forwarded-Protocol: ssl"], 400),
    (TRUSTED, ["X-Forwarded-Ssl: on", "X-Forwarded-Ssl: off"], 400),
    (UNTRUSTED, ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: on"], "http"),
    (UNTRUSTED, ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: off"], "http"),
])
def test_default_scheme_headers_as_gunicorn(servers: dict[str, Pair], source: str,
                                            headers: list[str], expected: str | int) -> None:
    answer = both(servers["default"], headers, source=source)
    if expected == 400:
        assert answer.status == 400
    else:
        assert (answer.status, answer.environ["wsgi.url_scheme"]) == (200, expected)


@pytest.mark.parametrize(("headers", "expected"), [
    (["X-Arr-Ssl: on"], "https"),
    (["X-Arr-Ssl: off"], "http"),
    (["X-Forwarded-Proto: https"], "http"),      # no longer listed: ignored
    (["X-Forwarded-Ssl: on", "X-Arr-Ssl: on"], "https"),
])
def test_a_custom_mapping_from_a_config_file_as_gunicorn(servers: dict[str, Pair],
                                                         headers: list[str], expected: str) -> None:
    answer = both(servers["arr"], headers)
    assert (answer.status, answer.environ["wsgi.url_scheme"]) == (200, expected)


def test_script_name_from_a_trusted_proxy_as_gunicorn(servers: dict[str, Pair]) -> None:
    pair = servers["default"]
    for port in (pair.ours, pair.gunicorn):
        env = ask(port, ["SCRIPT_NAME: /app"], target="/app/page").environ
        assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["HTTP_SCRIPT_NAME"]) == \
            ("/app", "/page", "/app"), port
        env = ask(port, ["SCRIPT_NAME: /app"], target="/app/page", source=UNTRUSTED).environ
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/app/page"), port
        assert "HTTP_SCRIPT_NAME" not in env


def test_forwarder_headers_and_refuse_as_gunicorn(servers: dict[str, Pair]) -> None:
    pair = servers["refuse"]
    for port in (pair.ours, pair.gunicorn):
        env = ask(port, ["REMOTE_USER: alice"]).environ
        assert env["HTTP_REMOTE_USER"] == "alice" and "REMOTE_USER" not in env, port
        assert ask(port, ["REMOTE_USER: alice"], source=UNTRUSTED).status == 400, port
        assert ask(port, ["X_Foo: 1"]).status == 400, port


def test_dangerous_maps_underscores_as_gunicorn(servers: dict[str, Pair]) -> None:
    pair = servers["dangerous"]
    for port in (pair.ours, pair.gunicorn):
        assert ask(port, ["X_Foo: 1"], source=UNTRUSTED).environ["HTTP_X_FOO"] == "1", port
    assert "HTTP_X_FOO" not in ask(servers["default"].ours, ["X_Foo: 1"]).environ


# ---- the other request paths: asyncio, WebSocket upgrades, a tornado Application -------------

TORNADO_APP = """
import json
import tornado.web

class Environ(tornado.web.RequestHandler):
    def get(self):
        self.write(json.dumps({"wsgi.url_scheme": self.request.protocol}))

application = tornado.web.Application([(r"/.*", Environ)])
"""

UPGRADE = ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]


@pytest.mark.parametrize("kind", ["gthread", "asyncio", "tornado"])
def test_every_request_path_refuses_contradictions(launcher: Launcher, kind: str) -> None:
    run = launcher.workdir
    (run / "tornadoapp.py").write_text(TORNADO_APP)
    app = "tornadoapp:application" if kind == "tornado" else "apps:environ"
    server: Server = launcher.start("-k", kind, "--threads", "2", "--chdir", str(run),
                                    bind="tcp", workers=1, app=app)
    assert server.port is not None
    assert ask(server.port, ["X-Forwarded-Ssl: on"]).environ["wsgi.url_scheme"] == "https"
    assert ask(server.port, ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: off"]).status == 400
    untrusted = ask(server.port, ["X-Forwarded-Proto: https", "X-Forwarded-Ssl: off"],
                    source=UNTRUSTED)
    assert (untrusted.status, untrusted.environ["wsgi.url_scheme"]) == (200, "http")
    if kind != "tornado":  # an upgrade request gets the same answer before any handshake
        refused = ask(server.port, [*UPGRADE, "X-Forwarded-Proto: http", "X-Forwarded-Ssl: on"])
        assert refused.status == 400
    assert server.proc.poll() is None and server.accepts()
