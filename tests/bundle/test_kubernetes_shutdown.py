"""The pod's shutdown choreography, played on real processes under load.

Two local stacks (real nginx + app server each, the sample app) stand for two pods; a front nginx
with both as upstreams stands for the Service's endpoints.  Stack A's nginx.conf carries the pod's
drain location (the template's ``plan.drain_file`` branch, as deploy/kubernetes renders it).  The
test plays what the kubelet and the endpoints controller do when pod A is deleted:

1. preStop on nginx: the drain file appears; A's health path answers 503 (readiness red);
2. the "endpoints controller" polls A's readiness like the kubelet does and, once it has failed
   ``READINESS_FAILURES`` times in a row, removes A from the front nginx (a graceful reload);
3. after the preStop sleep: SIGQUIT to A's nginx (the image's STOPSIGNAL);
4. after the app's longer preStop sleep: SIGTERM to A's server.

Meanwhile clients send requests through the front without pause, each on a new connection (the
front never retries on another upstream: ``proxy_next_upstream off``, so a request sent to A
after it stopped accepting would fail, not be hidden), and WebSockets are open on A.  The test
sees no failed request and every WebSocket on A closed with 1001 (Going Away).  Every wait is
bounded and every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from appserver.bundle.localstack import LocalStack
from appserver.bundle.render import render_files
from appserver.testing import free_port
from appserver.testing.stack import load_stack_settings

from .conftest import REPO

pytestmark = [pytest.mark.usefixtures("nginx"), pytest.mark.timeout(180)]

PRESTOP_SLEEP = 3.0  # kubernetes.prestop_sleep, scaled down
APP_STOP_DELAY = 1.0  # kubernetes.app_stop_delay
READINESS_PERIOD = 0.25  # kubernetes.probes.readiness_period, scaled down
READINESS_FAILURES = 2
GRACEFUL_TIMEOUT = 10
CLIENTS = 4
OVERRIDES = {
    "server": {"workers": 2, "graceful_timeout": GRACEFUL_TIMEOUT},
    "redis": {"mode": "off"},  # one chat room per stack is enough here
    "metrics": {"enabled": False},
}

FRONT_CONF = """\
worker_processes 1;
daemon off;
pid {run}/front.pid;
error_log {run}/front-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream pods {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://pods;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 120s;
            # A request sent to a pod that no longer accepts fails here: nothing is retried on
            # the other pod, so the choreography alone must keep requests away from it.
            proxy_next_upstream off;
        }}
    }}
}}
"""


class Front:
    """The front nginx: the Service's endpoints, as kube-proxy or an Ingress controller has them."""

    def __init__(self, nginx: str, run: Path) -> None:
        self.nginx = nginx
        self.run = run
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def write(self, upstreams: list[str]) -> None:
        servers = "\n".join(f"        server {address};" for address in upstreams)
        (self.run / "front.conf").write_text(
            FRONT_CONF.format(run=self.run, port=self.port, servers=servers))

    def start(self, upstreams: list[str]) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        self.write(upstreams)
        self.proc = subprocess.Popen(
            [self.nginx, "-p", f"{self.run}/", "-c", str(self.run / "front.conf"), "-e",
             str(self.run / "front-error.log")], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port), 10, "the front nginx to listen")

    def drop(self, upstreams: list[str]) -> None:
        """Endpoints changed: a graceful reload (new workers, old ones finish what they hold)."""
        assert self.proc is not None
        self.write(upstreams)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGQUIT, 15)


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals,
                 timeout: float) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group: whatever of it is left
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def pod_stack(tmp: Path, name: str, drain: bool) -> LocalStack:
    """A local stack; with ``drain``, its nginx.conf has the pod's drain location."""
    loaded = load_stack_settings(settings_file=REPO / "settings.toml", settings=OVERRIDES)
    stack = LocalStack(loaded, tmp / name, port=free_port(), tls_port=free_port())
    plan = stack.prepare()
    if drain:
        drained = dataclasses.replace(plan, drain_file=str(stack.run_dir / "draining"))
        conf = render_files(loaded, drained, {"nginx.conf": "nginx.conf.j2"})["nginx.conf"]
        assert "if (-f " in conf
        (stack.run_dir / "nginx.conf").write_text(conf)
        stack.plan = drained
    stack.start(timeout=30)
    return stack


@pytest.fixture
def pods(tmp_path: Path, nginx: str) -> Iterator[tuple[LocalStack, LocalStack, Front]]:
    a = b = None
    front = Front(nginx, tmp_path / "front")
    try:
        a = pod_stack(tmp_path, "a", drain=True)
        b = pod_stack(tmp_path, "b", drain=False)
        front.start([address(a), address(b)])
        yield a, b, front
    finally:
        front.stop()
        for stack in (a, b):
            if stack is not None:
                stack.stop()


def address(stack: LocalStack) -> str:
    return stack.url.removeprefix("http://")


class Load:
    """Clients sending GETs through the front without pause, each on a new connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(CLIENTS)]

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    response = session.get(f"{self.url}/api/info", timeout=15,
                                           headers={"Connection": "close"})
                    failure = None if response.status_code == 200 else \
                        f"{response.status_code} {response.text[:100]!r}"
                except requests.RequestException as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self.lock:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failures.append(failure)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def close_code(ws: ClientConnection, timeout: float) -> int | None:
    """Read until the server closes; the close code it sent (None: still open at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else -1
    return None


def ready(stack: LocalStack) -> bool:
    try:
        return requests.get(f"{stack.url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@dataclasses.dataclass
class Outcome:
    failures: list[str]
    served_before: int
    served_during: int
    served_after: int
    dropped_at: float
    codes: list[int | None]
    server_status: int | None
    nginx_status: int | None


def play(a: LocalStack, b: LocalStack, front: Front, *, prestop_sleep: float) -> Outcome:
    """Delete pod A as the kubelet would, under load; ``prestop_sleep`` 0 plays a pod without
    the preStop hook (nginx gets its signal at once)."""
    assert a.nginx is not None and a.server is not None
    front_url = f"http://127.0.0.1:{front.port}"
    ws_url = a.url.replace("http://", "ws://") + "/ws/chat"
    with contextlib.ExitStack() as sockets_open:
        sockets = [sockets_open.enter_context(connect(ws_url, open_timeout=10, close_timeout=5))
                   for _ in range(3)]
        for ws in sockets:
            assert '"welcome"' in str(ws.recv(timeout=10))
        with Load(front_url) as load:
            wait_until(lambda: load.ok >= 40, 30, "load through both stacks")
            served_before = load.ok
            t0 = time.monotonic()
            if prestop_sleep:
                # 1. preStop on nginx: the drain file; readiness goes red at once.
                (a.run_dir / "draining").touch()
            else:
                a.nginx.send_signal(signal.SIGQUIT)
            # 2. The kubelet's probe fails READINESS_FAILURES times; the endpoint goes.
            failures = 0
            while failures < READINESS_FAILURES:
                time.sleep(READINESS_PERIOD)
                failures = 0 if ready(a) else failures + 1
                assert time.monotonic() - t0 < 10, "readiness did not turn red"
            front.drop([address(b)])
            dropped_at = time.monotonic() - t0
            assert ready(b)
            if prestop_sleep:
                # 3. The preStop sleep ends: SIGQUIT, nginx's graceful stop.
                time.sleep(max(0.0, prestop_sleep - (time.monotonic() - t0)))
                a.nginx.send_signal(signal.SIGQUIT)
            # 4. The app's preStop ends later: SIGTERM, the server's graceful stop.
            time.sleep(APP_STOP_DELAY)
            a.server.send_signal(signal.SIGTERM)
            codes = [close_code(ws, GRACEFUL_TIMEOUT + 5) for ws in sockets]
            a.server.wait(timeout=GRACEFUL_TIMEOUT + 10)
            a.nginx.wait(timeout=15)
            served_during = load.ok - served_before
            time.sleep(1.0)  # traffic goes on, on B alone
        return Outcome(list(load.failures), served_before, served_during,
                       load.ok - served_before - served_during, dropped_at, codes,
                       a.server.returncode, a.nginx.returncode)


def test_pod_shutdown_loses_nothing(pods: tuple[LocalStack, LocalStack, Front]) -> None:
    a, b, front = pods
    out = play(a, b, front, prestop_sleep=PRESTOP_SLEEP)
    assert out.failures == [], f"{len(out.failures)} failed: {out.failures[:5]}"
    assert out.served_during > 20 and out.served_after > 5, out
    assert out.dropped_at < PRESTOP_SLEEP  # the endpoint went while nginx still served
    assert out.codes == [1001, 1001, 1001], out.codes
    assert out.server_status == 0 and out.nginx_status == 0
    # A served its share before it was drained.
    assert (a.run_dir / "nginx-access.log").read_text().count("GET /api/info") > 5


def test_without_the_prestop_wait_requests_fail(
        pods: tuple[LocalStack, LocalStack, Front]) -> None:
    """The control: the same play with nginx stopped at once (no preStop hook) loses requests
    that the endpoints still send to the pod, so the test above can see a failure."""
    a, b, front = pods
    out = play(a, b, front, prestop_sleep=0)
    assert out.failures, out
    assert all(failure.startswith("502") for failure in out.failures), out.failures[:5]
