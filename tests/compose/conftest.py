"""Fixtures of the compose suite: a private Docker engine, and the bundle deployed on it.

Two stacks, one after the other (the module-scoped ``deployment`` fixture is parametrized over
STACKS, so every test of test_compose.py runs against each, and pytest takes the first stack
down before it brings the second up):

- ``wsgi``: settings.toml's, started with the README's command, ``docker compose up``, run in the
  repository;
- ``asgi``: settings.asgi.toml's (the Starlette twin, sample_app/asgi.py), started with the
  command docs/asgi.md gives, ``docker compose -f deploy/asgi/compose.yaml up``.

Each gets only the documented port variable (``NGINX_HTTP_PORT``) and ``--detach --wait``.  The
one thing CI needs that users do not (builds on the host's network: see ci-override.yaml)
reaches compose the way compose itself looks for local changes.  Without ``-f``, compose reads a
``compose.override.yaml`` beside compose.yaml when there is one: for the wsgi stack the suite
writes it there (git-ignored) for the run and removes it after.  With ``-f``, compose reads the
files named and nothing else (no override is looked for, not even beside the named file), so
for the asgi stack the override is named as a second ``-f`` after the documented one; compose
merges the files in order, and the project directory (and the build contexts, relative to it)
stays the first file's.

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
LOCAL_OVERRIDE = REPO / "compose.override.yaml"  # read by `docker compose` (no -f) when present
# The redis service's build, the same way, for a stack that runs one ([redis] mode = "local"):
# an override may not name a service its compose.yaml lacks.
REDIS_OVERRIDE = "  redis:\n    build:\n      network: host\n"
# And the monitoring profile's image ([metrics] on), built by its prometheus service.
MONITORING_OVERRIDE = "  prometheus:\n    build:\n      network: host\n"


def override_text(loaded: Loaded) -> str:
    text = OVERRIDE.read_text()
    if loaded.settings.redis.mode == "local":
        text += REDIS_OVERRIDE
    if loaded.settings.metrics.enabled:
        text += MONITORING_OVERRIDE
    return text
UP_TIMEOUT = 900  # a cold build: apt-get in three images and pip in one
REPORT: list[str] = []  # timings, printed at the end of the run


@dataclass(frozen=True)
class Stack:
    """A rendered stack, and the compose files its documented command names."""

    name: str  # the test id
    settings: str  # relative to REPO
    # The documented ``-f`` arguments (relative to REPO); none: ``docker compose up`` finds
    # compose.yaml (and compose.override.yaml) in the repository itself.
    files: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        return " ".join(["docker compose", *(f"-f {name}" for name in self.files), "up"])


STACKS = (
    Stack("wsgi", "settings.toml"),  # README: docker compose up
    Stack("asgi", "settings.asgi.toml", ("deploy/asgi/compose.yaml",)),  # docs/asgi.md
)


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
        REPORT.insert(0, f"compose suite: {'; '.join(running.notes)}; whole suite "
                         f"{time.monotonic() - started:.1f}s")


@dataclass
class Deployment:
    """The bundle, up on the private engine, published on 127.0.0.1:port."""

    engine: Engine
    stack: Stack
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
        """``docker compose [-f FILE...] ARGS``, to run in the repository (cwd=REPO), as the
        README and docs/asgi.md do.  A stack named with ``-f`` gets CI's override as one more
        ``-f``: compose reads no override file of its own once ``-f`` is given."""
        files = [*self.stack.files, str(OVERRIDE.relative_to(REPO))] if self.stack.files else []
        return ["docker", "compose", *(arg for name in files for arg in ("-f", name)), *args]

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


@pytest.fixture(scope="module", params=STACKS, ids=lambda stack: stack.name)
def deployment(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Deployment]:
    """``docker compose up --detach --wait`` (the stack's documented command); ``down -v``
    afterwards (again, if a test did).  One stack at a time: the module scope takes the first
    down before the second comes up."""
    yield from deploy(engine, request.param)


def deploy(engine: Engine, stack: Stack) -> Iterator[Deployment]:
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
    loaded = load_settings(REPO / stack.settings)
    local_override = not stack.files  # else compose_argv names OVERRIDE with -f
    if local_override:
        if LOCAL_OVERRIDE.exists() and LOCAL_OVERRIDE.read_text() not in (
                OVERRIDE.read_text(), override_text(loaded)):
            pytest.fail(f"{LOCAL_OVERRIDE} exists (yours?); the compose suite needs to write its "
                        f"own there: move it away for the run", pytrace=False)
        LOCAL_OVERRIDE.write_text(override_text(loaded))
    deployed = Deployment(engine, stack, "", free_port(), loaded, timings)
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
            raise AssertionError(f"{stack.command} failed ({up.returncode}):\n{up.stdout}"
                                 f"{up.stderr}\n--- logs ---\n{logs.stdout}{logs.stderr}")
        yield deployed
    finally:
        started = time.monotonic()
        deployed.compose("down", "--volumes", "--rmi", "all", "--timeout", "60", timeout=180,
                         check=False)
        if local_override:
            LOCAL_OVERRIDE.unlink(missing_ok=True)
        # Keep the base image and the build cache for the next run (and the next stack), not
        # old copies.
        engine.docker("image", "prune", "--force", check=False)
        engine.docker("builder", "prune", "--force", "--keep-storage", "3gb", check=False,
                      timeout=300)
        timings["down and prune"] = time.monotonic() - started
        REPORT.append(f"compose suite, {stack.name} ({stack.command}): " + ", ".join(
            f"{name} {seconds:.1f}s" for name, seconds in timings.items()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORT:
        terminalreporter.write_line(line)
