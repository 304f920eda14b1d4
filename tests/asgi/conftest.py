"""Fixtures of the ASGI tests: real server processes (tests/server/harness.py), one per module
where the tests only make requests."""

from __future__ import annotations

import http.client
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import launcher, workdir
from tests.server.harness import Launcher, Server, UnixHTTPConnection

__all__ = ["launcher", "workdir"]  # the server suite's fixtures, shared

HERE = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": str(HERE)}
TRANSPORTS = ["unix", "tcp"]


@pytest.fixture(scope="module")
def module_launcher() -> Iterator[Launcher]:
    path = Path(tempfile.mkdtemp(prefix="am-", dir="/tmp"))
    launcher = Launcher(path)
    try:
        yield launcher
    finally:
        launcher.close()
        shutil.rmtree(path, ignore_errors=True)


def connect(server: Server, transport: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    if transport == "unix":
        assert server.unix_path is not None
        return UnixHTTPConnection(server.unix_path, timeout=timeout)
    assert server.port is not None
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
