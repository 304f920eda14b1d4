"""Fixtures of the gunicorn compatibility corpus: the server tests' launcher, an environment
without the caller's configuration, and a runner for gunicorn 27 itself (the reference)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..server.conftest import launcher, workdir
from ..server.harness import Launcher, children, signal_pid, wait_for

__all__ = ["launcher", "workdir"]

REPO = Path(__file__).resolve().parents[2]
SCRUBBED = ("GUNICORN_CMD_ARGS", "APPSERVER_CMD_ARGS", "WEB_CONCURRENCY", "PORT")


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


class Gunicorn:
    """gunicorn 27 run as the reference, in a directory of its own; stopped by the fixture."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("APPSERVER_") and k not in SCRUBBED}
        environ.update(env or {})
        # Its control socket lives in $HOME by default: keep it in the test's directory.
        argv = [sys.executable, "-m", "gunicorn", "--no-control-socket", *args]
        with open(cwd / "gunicorn.stderr", "ab") as err:
            proc = subprocess.Popen(argv, cwd=cwd, env=environ, stdout=err, stderr=err,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("APPSERVER_") and k not in SCRUBBED}
        environ.update(env or {})
        return subprocess.run([sys.executable, "-m", "gunicorn", *args], cwd=cwd, env=environ,
                              capture_output=True, text=True, timeout=timeout)

    def workers(self, proc: subprocess.Popen[bytes]) -> list[int]:
        return children(proc.pid)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
        signal_pid(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kids = children(proc.pid)
                signal_pid(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    for pid in [proc.pid, *kids]:
                        signal_pid(pid, signal.SIGKILL)
                    proc.wait(5)
            for pid in children(proc.pid):
                signal_pid(pid, signal.SIGKILL)


@pytest.fixture
def gunicorn(workdir: Path) -> Iterator[Gunicorn]:
    runner = Gunicorn(workdir)
    try:
        yield runner
    finally:
        runner.close()


def appserver_run(*args: str, cwd: Path, env: dict[str, str] | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``appserver serve ARGS`` to completion (--print-config, --check-config, start errors)."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("APPSERVER_") and k not in SCRUBBED}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "appserver", "serve", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=timeout)


__all__ += ["Gunicorn", "appserver_run", "next_run_dir", "wait_for"]
