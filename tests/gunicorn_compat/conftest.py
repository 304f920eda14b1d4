"""Fixtures of the gunicorn compatibility corpus: the server tests' launcher, an environment
without the caller's configuration, and a runner for gunicorn 27 itself (the reference)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..server.conftest import gunicorn, launcher, workdir
from ..server.harness import SCRUBBED, Gunicorn, Launcher, wait_for

__all__ = ["Gunicorn", "gunicorn", "launcher", "workdir"]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher copies os.environ: no configuration may leak in from the caller."""
    for name in list(os.environ):
        if name.startswith("APPSERVER_") or name in SCRUBBED:
            monkeypatch.delenv(name)


def next_run_dir(launcher: Launcher) -> Path:
    """The working directory of the launcher's next server, created now, so that a test can put
    ``./gunicorn.conf.py`` (read by default) and the app there first."""
    path = launcher.workdir / f"run{launcher._count + 1}"
    path.mkdir(exist_ok=True)
    return path


def appserver_run(*args: str, cwd: Path, env: dict[str, str] | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``appserver serve ARGS`` to completion (--print-config, --check-config, start errors)."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("APPSERVER_") and k not in SCRUBBED}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "appserver", "serve", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP socket on loopback that a server under test sends datagrams to (StatsD, syslog)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def datagrams(sock: socket.socket, quiet: float = 0.5) -> list[str]:
    """The datagrams received until ``quiet`` seconds pass without one."""
    out = []
    sock.settimeout(quiet)
    try:
        while True:
            out.append(sock.recv(65536).decode())
    except TimeoutError:
        return out


__all__ += ["Gunicorn", "appserver_run", "datagrams", "next_run_dir", "udp", "wait_for"]
