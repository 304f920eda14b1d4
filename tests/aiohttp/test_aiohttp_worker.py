"""``-k aiohttp``: a real ``aiohttp.web.Application`` (aiohttp_app.py) on real server processes.

JSON, a streamed response and a WebSocket over TCP and a unix socket, and a WebSocket through
the bundle's real nginx; the access log in our format; a graceful stop that finishes a slow
request and sends open WebSockets close 1001; --max-requests recycling; X-Forwarded-For
believed only from an allowed peer; a WSGI app refused and a failing on_startup stopping the
server at start; --keep-alive 0.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect, unix_connect  # noqa: E402

from appserver.bundle.tools import find_nginx  # noqa: E402
from appserver.config import worker_class_name  # noqa: E402
from appserver.testing import start_stack  # noqa: E402
from tests.server.harness import Launcher, Server, UnixHTTPConnection, request  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
APP = "aiohttp_app:app"
FAST = ("--graceful-timeout", "5", "--timeout", "20")
ACCESS = re.compile(r'^(\S+) - - \[[^]]+\] "(\w+) (\S+) HTTP/1\.1" (\d{3}) (\d+) "-" "([^"]*)"$',
                    re.M)


def start(launcher: Launcher, *options: str, app: str = APP, **kwargs: object) -> Server:
    return launcher.start("-k", "aiohttp", *FAST, *options, app=app,
                          env={"PYTHONPATH": str(HERE)}, **kwargs)  # type: ignore[arg-type]


def tcp_get(server: Server, path: str, headers: dict[str, str] | None = None,
            source: str = "127.0.0.1") -> tuple[int, bytes]:
    """A GET over TCP from ``source`` (a loopback address), with raw headers."""
    assert server.port is not None
    with socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                  source_address=(source, 0)) as sock:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_gunicorn_names_of_aiohttps_worker_mean_ours() -> None:
    for name in ("aiohttp", "aiohttp.GunicornWebWorker", "aiohttp.worker.GunicornWebWorker",
                 "aiohttp.GunicornUVLoopWebWorker", "aiohttp.worker.GunicornUVLoopWebWorker"):
        assert worker_class_name(name) == "aiohttp"


def test_json_stream_websocket_and_access_log_over_tcp_and_unix(launcher: Launcher,
                                                                 workdir: Path) -> None:
    access = workdir / "access.log"
    server = start(launcher, "--access-logfile", str(access), bind="both", workers=1)
    assert server.unix_path is not None and server.port is not None
    tcp = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for conn in (tcp, UnixHTTPConnection(server.unix_path)):
        try:
            conn.request("POST", "/echo", body=json.dumps({"a": [1, "x"]}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["got"] == {"a": [1, "x"]}
            reply = request(conn, "/stream")  # the same kept-alive connection
            assert reply.status == 200
            assert reply.headers.get("transfer-encoding") == "chunked"
            assert reply.body == b"".join(f"chunk {i}\n".encode() for i in range(5))
        finally:
            conn.close()
    with connect(f"ws://127.0.0.1:{server.port}/ws/echo", open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(10) == "echo: hi"
        ws.send(b"\x00\x01")
        assert ws.recv(10) == b"\x00\x01"
    with unix_connect(server.unix_path, "ws://localhost/ws/echo", open_timeout=10) as ws:
        ws.send("over unix")
        assert ws.recv(10) == "echo: over unix"

    def lines() -> list[tuple[str, ...]]:
        return ACCESS.findall(access.read_text()) if access.exists() else []

    deadline = time.monotonic() + 5
    while len([x for x in lines() if x[2] == "/ws/echo"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    found = lines()
    assert ("127.0.0.1", "POST", "/echo") in [x[:3] for x in found], access.read_text()
    stream = [x for x in found if x[2] == "/stream"]
    assert {x[0] for x in stream} == {"127.0.0.1", "-"}  # TCP, then the unix socket
    assert all(x[3] == "200" for x in stream)
    assert [x[3] for x in found if x[2] == "/ws/echo"] == ["101", "101"]


def test_a_graceful_stop_finishes_the_request_in_flight(launcher: Launcher) -> None:
    server = start(launcher, bind="tcp", workers=1)
    result: list[tuple[int, bytes]] = []
    thread = threading.Thread(target=lambda: result.append(tcp_get(server, "/slow?s=1.5")))
    thread.start()
    with connect(f"ws://127.0.0.1:{server.port}/ws/echo", open_timeout=10) as ws:
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:  # told why, as by the other classes
            ws.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    thread.join(10)
    assert result == [(200, b"slow done")]
    assert server.wait_exit(10) == 0
    server.wait_gone()


def test_max_requests_recycles_the_worker(launcher: Launcher) -> None:
    server = start(launcher, "--max-requests", "3", bind="tcp", workers=1)
    first = server.workers()
    pids = set()
    for _ in range(8):  # the launcher's readiness probe counted one already
        status, body = tcp_get(server, "/")
        assert status == 200
        pids.add(int(body.removeprefix(b"pid=")))
    assert len(pids) >= 2 and first[0] in pids
    server.wait_log(r"retired: served 3 requests \(--max-requests 3\)")


def test_x_forwarded_for_is_believed_only_from_an_allowed_peer(launcher: Launcher) -> None:
    server = start(launcher, "--forwarded-allow-ips", "127.0.0.2", bind="tcp", workers=1)
    forged = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"}
    status, body = tcp_get(server, "/client", forged, source="127.0.0.1")
    assert status == 200
    assert json.loads(body)["remote"] == "127.0.0.1" and json.loads(body)["scheme"] == "http"
    status, body = tcp_get(server, "/client", forged, source="127.0.0.2")
    assert json.loads(body)["remote"] == "203.0.113.9" and json.loads(body)["scheme"] == "https"
    status, body = tcp_get(server, "/client", {"X-Forwarded-Proto": "https",
                                               "X-Forwarded-Ssl": "off"}, source="127.0.0.2")
    assert status == 400 and b"contradictory scheme headers" in body


def test_a_wsgi_app_is_refused_at_start(launcher: Launcher) -> None:
    server = start(launcher, app="aiohttp_app:wsgi_app", bind="tcp", workers=1, wait=False)
    assert server.wait_exit(20) != 0
    log = server.log()
    assert "-k aiohttp serves an aiohttp.web.Application only" in log
    assert "-k asyncio or -k gthread" in log


@pytest.mark.parametrize("spec", ["aiohttp_app:make_app", "aiohttp_app:make_app()"])
def test_an_async_def_factory_is_awaited_in_the_worker(launcher: Launcher, spec: str) -> None:
    """aiohttp's GunicornWebWorker takes ``myapp:make_app`` with make_app an ``async def``
    returning the Application: the factory (or the coroutine of the call) is awaited in each
    worker's loop, not taken for an ASGI app."""
    server = start(launcher, app=spec, bind="tcp", workers=2)
    for _ in range(20):
        status, body = tcp_get(server, "/factory")
        assert status == 200, body
        reply = json.loads(body)
        assert reply["made_in"] == reply["pid"]  # built in the worker, not in the master
    assert tcp_get(server, "/")[0] == 200
    assert "never awaited" not in server.log()


@pytest.mark.parametrize(("spec", "message"), [
    ("aiohttp_app:not_an_app", "the app factory returned str, not an aiohttp.web.Application"),
    ("aiohttp_app:asgi_app", "awaits an async def app factory with no arguments; "
                             "aiohttp_app.asgi_app needs scope, receive, send"),
])
def test_an_async_callable_that_is_no_factory_is_refused(launcher: Launcher, spec: str,
                                                         message: str) -> None:
    server = start(launcher, app=spec, bind="tcp", workers=1, wait=False)
    assert server.wait_exit(20) == 4
    assert message in server.log()
    assert not server.booted()


@pytest.mark.parametrize(("options", "message"), [
    (["-k", "asyncio"], "only -k asgi and -k aiohttp await an app factory"),
    (["-k", "asgi"], "is an aiohttp.web.Application, not an ASGI app: serve it with -k aiohttp"),
])
def test_an_aiohttp_factorys_coroutine_elsewhere(launcher: Launcher, options: list[str],
                                                 message: str) -> None:
    """``make_app()`` of an async def factory is a coroutine: a WSGI class refuses it at start
    (without a "never awaited" warning) instead of serving it as a WSGI app; -k asgi awaits
    it (tests/asgi/test_factory.py) and refuses the aiohttp Application it makes."""
    server = launcher.start(*options, *FAST, app="aiohttp_app:make_app()", bind="tcp",
                            workers=1, wait=False, env={"PYTHONPATH": str(HERE)})
    assert server.wait_exit(20) == 4
    log = server.log()
    assert message in log and "never awaited" not in log


def test_settings_aiohttp_cannot_apply_are_named(launcher: Launcher) -> None:
    """Never ignored silently: each setting with nothing to act on under aiohttp's server, set
    to other than its default, is named in a warning."""
    server = start(launcher, "--header-timeout", "7", "--threads", "4",
                   "--websocket-idle-timeout", "30", bind="tcp", workers=1)
    found = server.wait_log(r"do not apply to an aiohttp app \(aiohttp's server", timeout=10)
    line = server.log().splitlines()
    assert any("header_timeout, threads do not apply" in item for item in line), found
    assert any("websocket_idle_timeout do not apply" in item for item in line)
    assert tcp_get(server, "/")[0] == 200


def test_a_websocket_through_the_bundles_nginx(tmp_path: Path) -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    settings = {"server": {"worker_class": "aiohttp", "workers": 1},
                "nginx": {"websocket_locations": ["/ws/"]}}
    with start_stack("tests.aiohttp.aiohttp_app:app", directory=REPO, settings=settings,
                     run_dir=tmp_path) as stack:
        url = stack.url.replace("http://", "ws://")
        with connect(f"{url}/ws/echo", open_timeout=10) as ws:
            for text in ("one", "two"):
                ws.send(text)
                assert ws.recv(10) == f"echo: {text}"
        host, port = stack.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            body = json.dumps({"through": "nginx"}).encode()
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                         b"application/json\r\nConnection: close\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert json.loads(data.partition(b"\r\n\r\n")[2])["got"] == {"through": "nginx"}
        stopped = stack.stop()
        assert stopped.graceful, stack.log()


def test_a_failing_on_startup_stops_the_server(launcher: Launcher) -> None:
    server = start(launcher, app="aiohttp_app:failing_app()", bind="tcp", workers=2, wait=False)
    assert server.wait_exit(20) == 4  # not a respawn loop
    log = server.log()
    assert "the aiohttp app's startup failed" in log and "the database is unreachable" in log
    assert not server.booted()


def test_keep_alive_0_closes_after_each_response(launcher: Launcher) -> None:
    server = start(launcher, "--keep-alive", "0", bind="tcp", workers=1)
    assert server.port is not None
    for path in ("/", "/stream"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                         .encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200") == 1 and b"Connection: close\r\n" in data
