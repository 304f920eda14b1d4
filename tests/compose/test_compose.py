"""The compose suite: `docker compose up` from this repository, on a private Docker engine.

Each test runs against both stacks (conftest.STACKS): settings.toml's (`docker compose up`, the
WSGI sample app) and settings.asgi.toml's (`docker compose -f deploy/asgi/compose.yaml up`, its
Starlette twin).  Every sample_app endpoint through the port published on 127.0.0.1 (never a
container's address), both health checks, the app server as a non-root user serving the app
its settings name, nginx's workers able to write to the socket, a chat round trip over
WebSockets, and a `docker compose down` that stops the app server gracefully within its stop
grace period.  The last test takes the stack down; keep it last.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from websockets.sync.client import ClientConnection, connect

from appserver.bundle.plan import (
    APP_UID,
    DOCKER_SOCKET_DIR,
    NGINX_UID,
    PROMETHEUS_PORT_ENV,
    SOCKET_NAME,
    docker_plan,
)
from appserver.testing import free_port

from ..bundle import endpoints
from .conftest import REPO, Deployment

pytestmark = pytest.mark.timeout(1200)  # the first test also waits for a cold build

# Each process in the container: "pid uid command" (the images have no ps).
PROCESSES = ("import os\n"
             "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
             "    status = dict(line.split(':', 1) for line in open(f'/proc/{pid}/status'))\n"
             "    cmd = open(f'/proc/{pid}/cmdline', 'rb').read().decode().replace(chr(0), ' ')\n"
             "    print(pid, status['Uid'].split()[0], ' '.join(cmd.split()))\n")


NGINX_PROCESSES = ("for s in /proc/[0-9]*/status; do name= ppid= uid=; "
                   "while read -r key value _; do case $key in Name:) name=$value;; "
                   "PPid:) ppid=$value;; Uid:) uid=$value;; esac; done < $s; "
                   '[ "$name" = nginx ] && echo "$ppid $uid"; done; true')


def processes(deployment: Deployment, service: str, python: str) -> list[tuple[int, int, str]]:
    out = deployment.exec(service, python, "-c", PROCESSES)
    rows = [line.split(" ", 2) for line in out.splitlines() if line.strip()]
    return [(int(pid), int(uid), cmd) for pid, uid, cmd in rows]


def client_address(deployment: Deployment) -> str:
    """The address nginx sees for a request to the published port: Docker's userland proxy
    connects from the gateway of the project's network."""
    network = f"{deployment.project}_default"
    out = deployment.engine.docker("network", "inspect", network, "--format",
                                   "{{range .IPAM.Config}}{{.Gateway}}{{end}}").stdout
    return out.strip()


@pytest.mark.parametrize("check", endpoints.CHECKS, ids=lambda check: check.__name__)
def test_endpoint(deployment: Deployment, check: Callable[[endpoints.Target], None]) -> None:
    limit = deployment.loaded.settings.nginx.client_max_body_size
    check(endpoints.Target(deployment.url, client_address=client_address(deployment),
                           body_limit=limit))


def test_both_services_are_healthy_and_only_nginx_publishes(deployment: Deployment) -> None:
    out = deployment.compose("ps", "--format", "json").stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    services = {row["Service"]: row for row in rows}
    # [redis] mode = "local" (settings.toml) adds the redis service: healthy, never published.
    expected = {"app", "nginx"} | ({"redis"} if has_redis(deployment) else set())
    assert set(services) == expected
    assert {name: row["Health"] for name, row in services.items()} == dict.fromkeys(
        expected, "healthy")
    if has_redis(deployment):
        assert [p for p in services["redis"]["Publishers"] or () if p["PublishedPort"]] == []
    # The app may expose a port to the stack's network (the metrics listener, for Prometheus
    # in the stack), never publish one on the host.
    assert [p for p in services["app"]["Publishers"] or () if p["PublishedPort"]] == []
    published = [(p["URL"], p["PublishedPort"], p["TargetPort"])
                 for p in services["nginx"]["Publishers"] if p["PublishedPort"]]
    assert published == [("127.0.0.1", deployment.port, 80)]


def test_the_image_runs_the_compiled_build(deployment: Deployment) -> None:
    """The image's build stage has a C compiler (APPSERVER_COMPILE=1): the hot path is compiled
    (docs/design.md, "Performance"), as the master's start-up line says."""
    logs = deployment.compose("logs", "--no-color", "app").stdout
    assert "compiled build: " in logs, logs[-2000:]


def test_app_server_runs_as_a_non_root_user(deployment: Deployment) -> None:
    procs = processes(deployment, "app", "/opt/venv/bin/python")
    servers = [(pid, uid) for pid, uid, cmd in procs if "appserver serve" in cmd]
    assert len(servers) >= 2, procs  # the master (PID 1) and its workers
    assert (1, APP_UID) in servers
    assert {uid for _, uid in servers} == {APP_UID}
    assert deployment.exec("app", "id", "-un").strip() == "app"


def test_nginx_workers_can_write_to_the_socket(deployment: Deployment) -> None:
    socket_path = f"{DOCKER_SOCKET_DIR}/{SOCKET_NAME}"
    owner, group, mode = deployment.exec("nginx", "stat", "-c", "%u %g %a",
                                         socket_path).split()
    assert (int(owner), int(group), mode) == (APP_UID, NGINX_UID, "660")
    # nginx's processes as "ppid uid": the master is PID 1 (root, to bind port 80), the
    # workers its children.  The image has neither ps nor Python.
    listing = deployment.exec("nginx", "bash", "-c", NGINX_PROCESSES)
    rows = [tuple(map(int, line.split())) for line in listing.splitlines() if line.strip()]
    workers = [uid for ppid, uid in rows if ppid == 1]
    assert workers and set(workers) == {NGINX_UID}, rows
    # And they do connect: the app answers through nginx.
    response = requests.get(deployment.url + "/api/info", timeout=10)
    assert response.headers["X-Served-By"] == "sample_app"


def test_the_app_server_serves_the_app_its_settings_name(deployment: Deployment) -> None:
    app = deployment.loaded.settings.app
    config = deployment.exec("app", "cat", "/etc/appserver/appserver.toml")
    assert f'wsgi_app = "{app.module}"' in config
    info = requests.get(deployment.url + "/api/info", timeout=10).json()
    if app.interface == "asgi":
        assert 'worker_class = "asyncio"\ninterface = "asgi"\n' in config
        assert info["server_software"].startswith("ASGI 3.0"), info
    else:
        assert 'interface = "asgi"' not in config
        assert info["server_software"].startswith("appserver/"), info


def test_the_chat_round_trip_through_the_published_port(deployment: Deployment) -> None:
    """Two clients of /ws/chat (nginx's WebSocket location, then the app's WebSockets): each
    hears the other join, a message reaches both, and the one who stays hears the other leave."""
    url = deployment.url.replace("http://", "ws://") + "/ws/chat"

    def events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
        return [json.loads(ws.recv(timeout=10)) for _ in range(count)]

    with connect(url, open_timeout=10, close_timeout=10) as alice:
        welcome, joined = events(alice, 2)
        assert welcome["type"] == "welcome" and joined["event"] == "join", (welcome, joined)
        if welcome.get("room", "memory") == "memory":
            # One worker (the settings say why): the chat runs in the process /api/info reports.
            info = requests.get(deployment.url + "/api/info", timeout=10).json()
            assert welcome["worker"] == info["pid"]
        with connect(url, open_timeout=10, close_timeout=10) as bob:
            bob_welcome, _ = events(bob, 2)
            assert events(alice, 1)[0]["name"] == bob_welcome["name"]  # bob joined
            bob.send(json.dumps({"name": "Bob", "text": "through compose"}))
            for ws in (alice, bob):
                message = events(ws, 1)[0]
                assert (message["type"], message["name"], message["text"]) == (
                    "message", "Bob", "through compose")
        left = events(alice, 1)[0]
        assert (left["event"], left["name"]) == ("leave", bob_welcome["name"])


def has_redis(deployment: Deployment) -> bool:
    return deployment.loaded.settings.redis.mode == "local"


def test_the_chat_fans_out_across_the_app_workers_through_redis(
        deployment: Deployment) -> None:
    """[redis] mode = "local": clients on different workers of the app container hear each
    other; Redis answers PING.  Without it, the stack has no redis service and the app no Redis
    URL."""
    if not has_redis(deployment):
        services = deployment.compose("config", "--services").stdout.split()
        assert "redis" not in services, services
        env = deployment.exec("app", "env")
        assert "APPSERVER_REDIS_URL" not in env, env
        return
    assert deployment.exec("redis", "redis-cli", "ping").strip() == "PONG"
    assert deployment.exec("redis", "id", "-un").strip() == "redis"  # not root
    url = deployment.url.replace("http://", "ws://") + "/ws/chat"

    with ExitStack() as opened:

        def join() -> tuple[int, ClientConnection]:
            ws = opened.enter_context(connect(url, open_timeout=10, close_timeout=2))
            welcome = json.loads(ws.recv(timeout=10))
            assert welcome["room"] == "redis", welcome
            return welcome["worker"], ws

        # Placed, not left to chance (one worker may accept every connection): the second
        # client joins while the first one's worker is stopped, so another worker takes it.
        pid_a, a = join()
        deployment.exec("app", "sh", "-c", f"kill -STOP {pid_a}")
        try:
            pid_b, b = join()
        finally:
            deployment.exec("app", "sh", "-c", f"kill -CONT {pid_a}")
        assert pid_b != pid_a
        a.send(json.dumps({"name": "compose", "text": f"from worker {pid_a}"}))
        for ws in (a, b):
            while True:
                event = json.loads(ws.recv(timeout=10))
                if event["type"] == "message":
                    assert event["text"] == f"from worker {pid_a}"
                    assert event["worker"] == pid_a
                    break


def test_the_monitoring_profile_scrapes_the_app_server_and_nginx(deployment: Deployment) -> None:
    """[metrics] on: `docker compose --profile monitoring up` adds Prometheus (deploy/prometheus.yml
    and alerts.yml baked into Debian's package) and prometheus-nginx-exporter in nginx's network
    namespace; both scrape jobs come up and count the requests sent.  [metrics] off: the compose
    file has no monitoring services at all."""
    services = deployment.compose("--profile", "monitoring", "config", "--services").stdout.split()
    if deployment.loaded.settings.metrics.enabled is False:
        assert not {"prometheus", "nginx-exporter"} & set(services), services
        return
    port = free_port()
    env = {**deployment.env, PROMETHEUS_PORT_ENV: str(port)}
    profile = ["--profile", "monitoring"]
    image = f"{deployment.project}-monitoring:latest"

    def compose(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(deployment.compose_argv(*profile, *args), env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, check=False)

    try:
        up = compose("up", "--detach", "--wait", "prometheus", "nginx-exporter", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        for _ in range(7):
            assert requests.get(deployment.url + "/", timeout=10).status_code == 200
        api = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 90  # the first scrapes come within scrape_interval
        while True:
            targets = requests.get(f"{api}/targets", timeout=10).json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            result = requests.get(f"{api}/query", timeout=10, params={
                "query": 'sum(appserver_requests_total{method="GET"})'}).json()["data"]["result"]
            if health == {"appserver": "up", "nginx": "up"} and result \
                    and float(result[0]["value"][1]) >= 7:
                break
            assert time.monotonic() < deadline, (health, result, targets)
            time.sleep(1)
        nginx_up = requests.get(f"{api}/query", params={"query": "nginx_up"},
                                timeout=10).json()["data"]["result"]
        assert [float(r["value"][1]) for r in nginx_up] == [1.0], nginx_up
        rules = requests.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        assert any(rule["name"] == "AppserverHigh5xxRate" for group in rules
                   for rule in group["rules"]), rules
        # Debian's package runs as its own user, never root.
        assert compose("exec", "-T", "prometheus", "id", "-un", timeout=60).stdout.strip() \
            == "prometheus"
    finally:
        compose("rm", "--stop", "--force", "prometheus", "nginx-exporter", timeout=120)
        # `down --volumes` without the profile keeps the profile's volume (docs/monitoring.md).
        deployment.engine.docker("volume", "rm", "--force",
                                 f"{deployment.project}_prometheus-data", check=False)
        # The suite's `down --rmi all` sees no inactive profile: this image goes here, so that
        # the next run builds it from its checkout (the build cache keeps that quick).
        deployment.engine.docker("image", "rm", "--force", image, check=False)


def test_down_stops_the_app_server_gracefully(deployment: Deployment) -> None:
    grace = docker_plan(deployment.loaded).docker
    assert grace is not None
    logs = subprocess.Popen(deployment.compose_argv("logs", "--follow", "--no-color", "app"),
                            env=deployment.env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)  # attached before the stop
        started = time.monotonic()
        deployment.compose("down", "--volumes", timeout=grace.stop_grace_period + 60)
        took = time.monotonic() - started
        output, _ = logs.communicate(timeout=30)
    finally:
        if logs.poll() is None:
            logs.kill()
            logs.wait(10)
    assert took < grace.stop_grace_period, f"down took {took:.1f}s"
    assert "master received SIGTERM" in output, output
    assert re.search(r"master \d+ stopped", output), output
    assert re.search(r"app-1 exited with code 0", output), output
    assert deployment.compose("ps", "--all", "--quiet").stdout.strip() == ""
    volumes = deployment.engine.docker("volume", "ls", "--quiet").stdout.split()
    assert not [v for v in volumes if v.startswith(deployment.project)], volumes
