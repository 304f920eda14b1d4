"""Fixtures of the compose suite: a private Docker engine, and the bundle deployed on it.

The stack starts with the README's command, ``docker compose up``, run in the repository with
only the documented port variable (``NGINX_HTTP_PORT``) and ``--detach --wait`` added.  The one
thing CI needs that users do not (builds on the host's network: see ci-override.yaml) reaches
compose the way compose itself looks for local changes: a ``compose.override.yaml`` beside
compose.yaml (git-ignored), written for the run and removed after it.

The suite runs wherever it can (Linux, as root, with dockerd); elsewhere it is skipped with the
reason, except in CI (CI=true), where not running is a failure: ./run-tests installs what it
needs there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appserver.bundle.loading import Loaded, load_settings
from appserver.bundle.plan import HTTP_PORT_ENV
from appserver.testing import free_port

from .engine import Engine, EngineError, build_base_image, find_program, link_compose_plugin
from .engine import start_engine as _start_engine
from .wheelhouse import ensure_wheelhouse

REPO = Path(__file__).resolve().parents[2]
OVERRIDE = Path(__file__).with_name("ci-override.yaml")
LOCAL_OVERRIDE = REPO / "compose.override.yaml"  # read by `docker compose` when present
UP_TIMEOUT = 900  # a cold build: apt-get in three images and pip in one
REPORT: list[str] = []  # timings, printed at the end of the run


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the compose suite must run in CI but cannot: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if not sys.platform.startswith("linux"):
        unavailable("the compose suite needs Linux (it runs its own dockerd)")
    if os.geteuid() != 0:
        unavailable("the compose suite needs root: it starts a private dockerd")
    for program, package in (("dockerd", "docker.io"), ("docker", "docker.io")):
        if find_program(program) is None:
            unavailable(f"{program} is not installed (apt-get install {package}; ./run-tests "
                        "does it when run as root)")
    # A short path: the engine's unix sockets live under it (108-byte limit).
    started = time.monotonic()
    running = _start_engine(tmp_path_factory.mktemp("docker"))
    try:
        try:
            running.notes.append(link_compose_plugin(running))
        except EngineError as exc:
            unavailable(str(exc))
        running.notes.append(f"engine ready in {time.monotonic() - started:.1f}s")
        running.remove_leftovers()
        yield running
    finally:
        running.stop()


@dataclass
class Deployment:
    """The bundle, up on the private engine, published on 127.0.0.1:port."""

    engine: Engine
    project: str
    port: int
    loaded: Loaded
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env, HTTP_PORT_ENV: str(self.port)}

    def compose_argv(self, *args: str) -> list[str]:
        """``docker compose ARGS``, to run in the repository (cwd=REPO), as the README does."""
        return ["docker", "compose", *args]

    def compose(self, *args: str, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.compose_argv(*args), env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False, cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited with "
                                 f"{proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def exec(self, service: str, *command: str) -> str:
        return self.compose("exec", "-T", service, *command, timeout=60).stdout


@pytest.fixture(scope="module")
def deployment(engine: Engine) -> Iterator[Deployment]:
    """``docker compose up --build --wait``; ``down -v`` afterwards (again, if a test did)."""
    timings: dict[str, float] = {}
    try:
        timings["base image"] = build_base_image(engine)
    except EngineError as exc:
        if "not installed" in str(exc):
            unavailable(str(exc))
        raise
    started = time.monotonic()
    ensure_wheelhouse()
    timings["wheelhouse"] = time.monotonic() - started
    loaded = load_settings(REPO / "settings.toml")
    if LOCAL_OVERRIDE.exists() and LOCAL_OVERRIDE.read_text() != OVERRIDE.read_text():
        pytest.fail(f"{LOCAL_OVERRIDE} exists (yours?); the compose suite needs to write its own "
                    f"there: move it away for the run", pytrace=False)
    LOCAL_OVERRIDE.write_text(OVERRIDE.read_text())
    deployed = Deployment(engine, "", free_port(), loaded, timings)
    try:
        deployed.project = json.loads(deployed.compose("config", "--format", "json").stdout)["name"]
        # Images left by an earlier run would be used as they are: remove them, so that `up`
        # builds this checkout (the build cache keeps that quick).
        deployed.compose("down", "--volumes", "--rmi", "all", timeout=180, check=False)
        started = time.monotonic()
        up = deployed.compose("up", "--detach", "--wait", timeout=UP_TIMEOUT, check=False)
        timings["up --wait"] = time.monotonic() - started
        if up.returncode != 0:
            logs = deployed.compose("logs", "--no-color", "--tail", "40", check=False)
            raise AssertionError(f"docker compose up failed ({up.returncode}):\n{up.stdout}"
                                 f"{up.stderr}\n--- logs ---\n{logs.stdout}{logs.stderr}")
        yield deployed
    finally:
        deployed.compose("down", "--volumes", "--rmi", "all", "--timeout", "60", timeout=180,
                         check=False)
        LOCAL_OVERRIDE.unlink(missing_ok=True)
        # Keep the base image and the build cache for the next run, not old copies.
        engine.docker("image", "prune", "--force", check=False)
        engine.docker("builder", "prune", "--force", "--keep-storage", "3gb", check=False,
                      timeout=300)
        REPORT.append(f"compose suite: {'; '.join(engine.notes)}; " + ", ".join(
            f"{name} {seconds:.1f}s" for name, seconds in timings.items()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORT:
        terminalreporter.write_line(line)
