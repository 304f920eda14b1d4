"""Servers for the WebSocket suite.

Every server is a real ``appserver serve`` process with one worker (so the per-worker limits and
the ``/events`` record of tests/websocket/apps.py are deterministic), started by
:class:`appserver.testing.AppServerProcess` and stopped by its PID in a finalizer.  Worker classes
are a parameter: every class that holds connections (``WS_TEST_WORKER_CLASSES=asyncio`` runs the
suite against one).  Through nginx
(test_nginx.py), :func:`appserver.testing.start_stack` runs the bundle's rendered nginx config in
front of the server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appserver.testing import AppServerProcess, free_port
from tests.behaviour.client import Response, exchange

REPO = Path(__file__).resolve().parents[2]
APP = "tests.websocket.apps:app"

# The classes that hold connections; the async ones join once they pass this suite.  To try one:
# WS_TEST_WORKER_CLASSES=asyncio,gevent pytest tests/websocket
WORKER_CLASSES = os.environ.get(
    "WS_TEST_WORKER_CLASSES", "gthread,gevent,eventlet,asyncio,tornado").split(",")
TRANSPORTS = ["tcp", "unix"]

# Large enough for the 8 MiB echo, small enough that 1009 costs little to provoke.
MAX_MESSAGE = 9 << 20


@dataclass
class Server:
    process: AppServerProcess
    address: str             # host:port or unix:/path
    worker_class: str
    transport: str
    tmp: Path

    def get(self, path: str, timeout: float = 10.0) -> Response:
        return exchange(self.address, f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
                        .encode(), timeout)

    def log(self) -> str:
        return self.process.log_text()

    def worker_pids(self) -> list[int]:
        return self.process.worker_pids()


ServerFactory = Callable[..., Server]


def _address(tmp: Path, transport: str) -> str:
    return f"unix:{tmp / 'app.sock'}" if transport == "unix" else f"127.0.0.1:{free_port()}"


def start_server(tmp: Path, args: list[str], *, worker_class: str = "gthread",
                 transport: str = "tcp", threads: int = 4) -> Server:
    """Start a server; the caller owns stopping it (``server.process.stop()``)."""
    address = _address(tmp, transport)
    argv = ["-k", worker_class, "-w", "1", "-b", address, "--graceful-timeout", "5",
            "--websocket-max-message-size", str(MAX_MESSAGE // 1024) + "K"]
    if worker_class != "sync":
        argv += ["--threads", str(threads)]
    process = AppServerProcess([*argv, *args, APP], log_path=tmp / "error.log", cwd=REPO,
                               env={"PYTHONPATH": str(REPO)})
    process.start(wait_for=[address], workers=1)
    return Server(process, address, worker_class, transport, tmp)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Function-scoped servers (for tests that stop or reload them); all stopped at the end."""
    started: list[Server] = []

    def make(*args: str, name: str = "server", **kwargs: object) -> Server:
        tmp = tmp_path / f"{name}{len(started)}"
        tmp.mkdir()
        server = start_server(tmp, list(args), **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.process.stop(timeout=10)


@pytest.fixture(scope="session", params=[(w, t) for w in WORKER_CLASSES for t in TRANSPORTS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server (test_protocol.py, test_hijack.py): every app, default keep-alive
    settings (no pings within a test)."""
    worker_class, transport = request.param
    tmp = tmp_path_factory.mktemp(f"ws-{worker_class}-{transport}")
    running = start_server(tmp, ["--timeout", "20"], worker_class=worker_class,
                           transport=transport, threads=8)
    try:
        yield running
    finally:
        code = running.process.stop(timeout=10)
        assert code == 0, running.log()
    assert_clean_log(running.log(), allow=("/native/crash",))
    if transport == "unix":
        assert not os.path.exists(running.address[5:]), "socket file left behind"


@pytest.fixture(params=WORKER_CLASSES)
def worker_class(request: pytest.FixtureRequest) -> str:
    """For the tests that start servers of their own (make_server)."""
    return str(request.param)


def assert_clean_log(text: str, *, allow: tuple[str, ...] = ()) -> None:
    """No app error, traceback, 500 or heartbeat kill in a server's log, except in the log
    records (with their tracebacks) that contain one of ``allow``."""
    bad = ("Traceback", "app error", "500 Internal", "silent", "timeout kill", "crashed",
           "invalid response", "Error")
    found, allowed = [], False
    for line in text.splitlines():
        if line.startswith("["):  # a new log record (its traceback lines follow it)
            allowed = any(ok in line for ok in allow)
        if not allowed and any(word in line for word in bad):
            found.append(line)
    assert not found, "unexpected lines in the server log:\n" + text
