"""``[redis]`` in the bundle: validation, the cross-check warning, the compose service (checked
by ``docker compose config``), and ``appserver up`` running a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle import plan as P
from appserver.bundle.loading import Loaded
from appserver.bundle.localstack import LocalStack, StackError
from appserver.bundle.redisproc import find_redis
from appserver.bundle.render import render_docker, render_warnings, write_files
from appserver.bundle.settings import SettingsError
from appserver.testing.server import free_port

from .conftest import REPO, make_project, read_data

Project = Callable[..., Loaded]


def with_redis(**redis: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["redis"] = redis
    return edit


@pytest.mark.parametrize(("redis", "message"), [
    ({"mode": "url"}, 'redis.mode = "url" needs redis.url'),
    ({"mode": "local", "url": "redis://x:6379/0"}, 'set mode = "url" to use it'),
    ({"mode": "url", "url": "http://x"}, "'http://x' is not a Redis URL"),
    ({"mode": "on"}, "redis.mode"),
    ({"mode": "local", "port": 6379}, "redis.port"),
])
def test_bad_redis_settings_name_key_value_and_fix(project: Project, redis: dict[str, Any],
                                                   message: str) -> None:
    with pytest.raises(SettingsError, match="redis") as info:
        project("maximal.toml", with_redis(**redis))
    assert message in str(info.value)


def test_off_with_several_workers_and_websockets_is_a_warning(project: Project) -> None:
    loaded = project("maximal.toml", with_redis(mode="off"))  # workers = 4, /ws/ and others
    lines = [line for line in render_warnings(loaded) if "redis.mode" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert "with 4 workers" in lines[0] and 'set redis.mode = "local"' in lines[0]
    one = project("maximal.toml", lambda d: (d["server"].update(workers=1),
                                             with_redis(mode="off")(d)))
    assert not [line for line in render_warnings(one) if "redis.mode" in line]


def test_the_repository_runs_redis_locally_with_automatic_workers() -> None:
    text = (REPO / "settings.toml").read_text()
    assert 'mode = "local"' in text and "\nworkers =" not in text
    compose = (REPO / "compose.yaml").read_text()
    assert 'APPSERVER_REDIS_URL: "redis://redis:6379/0"' in compose
    assert "'redis>=5'" in (REPO / "Dockerfile").read_text()  # redis-py in the app image
    dockerfile = (REPO / P.REDIS_DOCKERFILE).read_text()
    assert "FROM debian:bookworm-slim" in dockerfile and "USER redis" in dockerfile


def compose_json(compose: list[str], directory: Path) -> dict[str, Any]:
    proc = subprocess.run([*compose, "--project-directory", str(directory), "-f",
                           str(directory / "compose.yaml"), "config", "--format", "json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_the_redis_service_in_compose(project: Project, compose: list[str]) -> None:
    loaded = project("maximal.toml", with_redis(mode="local", memory="64m"))
    write_files(loaded.directory, render_docker(loaded))
    config = compose_json(compose, loaded.directory)
    redis, app = config["services"]["redis"], config["services"]["app"]
    assert "ports" not in redis and "expose" not in redis  # nothing published
    assert set(redis["networks"]) == {"redis"}
    assert config["networks"]["redis"]["internal"] is True
    assert set(app["networks"]) == {"default", "redis"}
    assert app["environment"]["APPSERVER_REDIS_URL"] == "redis://redis:6379/0"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    assert [v["target"] for v in redis["volumes"]] == ["/data"]
    assert "redis-data" in config["volumes"]
    assert redis["build"]["dockerfile"] == P.REDIS_DOCKERFILE
    assert redis["deploy"]["resources"]["limits"]["memory"] == str(64 << 20)


def test_url_mode_passes_the_url_and_runs_no_service(project: Project, compose: list[str]) -> None:
    loaded = project("maximal.toml")  # mode = "url"
    write_files(loaded.directory, render_docker(loaded))
    config = compose_json(compose, loaded.directory)
    assert "redis" not in config["services"]
    assert config["services"]["app"]["environment"] == {
        "APPSERVER_REDIS_URL": "redis://redis.internal:6379/0"}


def test_off_renders_no_redis(project: Project) -> None:
    rendered = render_docker(project("bare.toml"))
    assert "redis" not in rendered[P.COMPOSE_FILE]
    assert "redis" not in rendered[P.APP_DOCKERFILE]


def test_missing_redis_server_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               nginx: str) -> None:
    data = read_data("bare.toml")
    data["redis"] = {"mode": "local"}
    from appserver.bundle.loading import load_settings
    loaded = load_settings(make_project(tmp_path / "project", data))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    stack = LocalStack(loaded, tmp_path / "run", port=free_port(), nginx=nginx)
    with pytest.raises(StackError, match=r"apt-get install redis-server"):
        stack.start()
    assert stack.server is None  # nothing started


@pytest.mark.skipif(find_redis() is None, reason="apt-get install redis-server")
def test_appserver_up_runs_redis_and_stops_it(tmp_path: Path, nginx: str) -> None:
    """`appserver up` with [redis] mode = "local": a redis-server in the run directory whose
    URL the workers use (their log says they subscribed), stopped by Ctrl-C with the rest."""
    data = read_data("bare.toml")
    data["redis"] = {"mode": "local"}
    data.setdefault("server", {})["workers"] = 2
    settings = make_project(tmp_path / "project", data)
    run_dir = tmp_path / "run"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "appserver", "up", "--settings",
                             str(settings), "--run-dir", str(run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    redis_pid = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("appserver up: redis-server pid"):
                redis_pid = int(line.split()[4])
                break
            assert line, "appserver up ended early"
        assert redis_pid and (run_dir / "redis" / "redis.sock").exists()
        cli = subprocess.run(["redis-cli", "-s", str(run_dir / "redis" / "redis.sock"), "ping"],
                             capture_output=True, text=True, timeout=10, check=True)
        assert cli.stdout.strip() == "PONG"
        assert not any(settings.parent.glob("*.aof")) and not any(
            settings.parent.glob("appendonlydir"))  # nothing written into the project
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, output
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)
