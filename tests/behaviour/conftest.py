"""Servers for the behaviour suite: every worker class, over TCP and over a unix socket.

One server per (worker class, transport) for the whole module keeps the suite fast; the tests
check the worker survives every bad input by making a normal request afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appserver.testing import AppServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]

WORKER_CLASSES = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
    "gevent": ["-k", "gevent", "--worker-connections", "200"],
    "eventlet": ["-k", "eventlet", "--worker-connections", "200"],
    "asyncio": ["-k", "asyncio", "--threads", "8"],
    "tornado": ["-k", "tornado", "--threads", "8"],
    "asgi": ["-k", "asgi"],  # the ASGI path, with the ASGI twin of the app
}
APPS = {"asgi": "tests.behaviour.asgi_app:app"}
TRANSPORTS = ["tcp", "unix"]


@dataclass
class RunningServer:
    process: AppServerProcess
    address: str
    worker_class: str
    transport: str

    @property
    def keeps_alive(self) -> bool:
        return self.worker_class != "sync"


@pytest.fixture(scope="module", params=[(w, t) for w in WORKER_CLASSES for t in TRANSPORTS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    worker_class, transport = request.param
    tmp = tmp_path_factory.mktemp(f"{worker_class}-{transport}")
    if transport == "unix":
        address = f"unix:{tmp / 'app.sock'}"
    else:
        address = f"127.0.0.1:{free_port()}"
    args = [*WORKER_CLASSES[worker_class], "-w", "2", "-b", address, "--timeout", "20",
            "--graceful-timeout", "5", "--keep-alive", "2", "--header-timeout", "1.5",
            "--limit-request-body", str(256 * 1024 * 1024),
            "--access-logfile", str(tmp / "access.log"),
            APPS.get(worker_class, "tests.behaviour.app:app")]
    process = AppServerProcess(args, log_path=tmp / "error.log", cwd=REPO,
                               env={"PYTHONPATH": str(REPO)})
    process.start(wait_for=[address], workers=2)
    try:
        yield RunningServer(process, address, worker_class, transport)
    finally:
        code = process.stop()
        assert code == 0, process.log_text()
        if transport == "unix":
            assert not os.path.exists(address[5:]), "socket file left behind"
