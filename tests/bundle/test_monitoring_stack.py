"""A real Prometheus (Debian's binary, on loopback) scrapes the local stack of ``appserver up``
with ``[metrics]`` on, using the prometheus.yml that ``appserver up`` rendered into its run
directory.  The tests send known traffic (2xx, 4xx and 5xx by method), kill a worker with SIGKILL,
let another hang past ``server.timeout``, and read everything back through Prometheus's HTTP API
(``/api/v1/query``): the counts match what was sent, the SIGKILL shows as ``reason="killed"`` and
the hang as ``reason="timeout"``, and nothing of the public port leads to the metrics.

Every process here is started by the test and stopped by its PID (SIGINT for ``appserver up``,
which stops nginx, the exporter and the server; SIGTERM for Prometheus), every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from appserver.bundle import localstack
from appserver.bundle.tools import find_exporter
from appserver.testing import free_port, free_ports, start_stack

from ..server.harness import alive, children
from .conftest import dump_toml

pytestmark = pytest.mark.usefixtures("nginx")

START_TIMEOUT = 60.0
SCRAPE_WAIT = 30.0  # seconds for a change to reach Prometheus (1 s scrapes)
SERVER_TIMEOUT = 3  # server.timeout: /hang outlives it
WORKERS = 2
SENT = {("PUT", "2xx"): 13, ("POST", "5xx"): 7, ("DELETE", "4xx"): 5}

APP = '''"""The monitoring test's app: /ok 200, /boom 500, /hang sleeps past the server's timeout."""
import time


def application(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    if path == "/hang":
        time.sleep(120)
    if path in ("/ok", "/healthz", "/hang"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\\n"]
    if path == "/boom":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"boom\\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no page here\\n"]
'''


@dataclass
class Deployment:
    url: str  # nginx's public port
    prometheus: str  # Prometheus's base URL
    metrics_port: int
    status_port: int
    server_pid: int
    run_dir: Path
    up_log: Path
    exporter: bool

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.prometheus}/api/v1/query", params={"query": expr},
                                timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {tuple(item["metric"].get(label, "") for label in labels): float(item["value"][1])
                for item in self.query(expr)}

    def wait_for(self, expr: str, labels: tuple[str, ...],
                 done: Callable[[dict[tuple[str, ...], float]], bool]) -> dict[tuple[str, ...], float]:
        deadline = time.monotonic() + SCRAPE_WAIT
        found: dict[tuple[str, ...], float] = {}
        while time.monotonic() < deadline:
            found = self.values(expr, *labels)
            if done(found):
                return found
            time.sleep(0.5)
        log = self.up_log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{expr}: still {found} after {SCRAPE_WAIT}s; appserver up's log:\n"
                             f"{log}")

    def worker_pids(self) -> list[int]:
        return [pid for pid in children(self.server_pid) if alive(pid)]


def _wait_line(path: Path, pattern: str, proc: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in {path}:\n"
                         f"{path.read_text(errors='replace') if path.exists() else ''}")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Signal one process we started, by its PID; SIGKILL past a bounded wait."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus; ./run-tests does)")
    root = tmp_path_factory.mktemp("monitoring")
    project, run = root / "project", root / "run"
    project.mkdir()
    (project / "metricsapp.py").write_text(APP)
    port, metrics_port, status_port, tls_port, exporter_port = free_ports(5)
    (project / "settings.toml").write_text(dump_toml({
        "app": {"module": "metricsapp:application", "health_path": "/healthz"},
        # sync: a hung request stops the worker's heartbeat, so the master's timeout kills it.
        "server": {"workers": WORKERS, "worker_class": "sync", "timeout": SERVER_TIMEOUT,
                   "graceful_timeout": 5},
        "nginx": {"static_dir": ""},
        "compose": {"published_port": port, "published_tls_port": tls_port},
        "metrics": {"enabled": True, "bind": f"127.0.0.1:{metrics_port}",
                    "nginx_status_port": status_port, "nginx_exporter_port": exporter_port,
                    "scrape_interval": 1},
    }))
    up_log = run.parent / "up.log"
    opened: list[IO[bytes]] = []
    procs: list[tuple[subprocess.Popen[bytes], signal.Signals, float]] = []
    try:
        out = open(up_log, "wb")  # noqa: SIM115 (closed below)
        opened.append(out)
        up = subprocess.Popen(
            [sys.executable, "-m", "appserver", "up", "--settings", "settings.toml",
             "--run-dir", str(run)], cwd=project, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT)
        procs.append((up, signal.SIGINT, 30.0))
        line = _wait_line(up_log, r"appserver up: http://\S+ .*server pid (\d+)", up)
        prom_log = open(root / "prometheus.log", "wb")  # noqa: SIM115 (closed below)
        opened.append(prom_log)
        prom_port = free_port()
        prom = subprocess.Popen(
            [prometheus, f"--config.file={run / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=prom_log, stderr=subprocess.STDOUT)
        procs.append((prom, signal.SIGTERM, 15.0))
        base = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if requests.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert prom.poll() is None and time.monotonic() < deadline, \
                (root / "prometheus.log").read_text(errors="replace")
            time.sleep(0.2)
        yield Deployment(url=f"http://127.0.0.1:{port}", prometheus=base,
                         metrics_port=metrics_port, status_port=status_port,
                         server_pid=int(line.group(1)), run_dir=run, up_log=up_log,
                         exporter=find_exporter() is not None)
    finally:
        for proc, sig, timeout in reversed(procs):
            _stop(proc, sig, timeout)
        for handle in opened:
            handle.close()


def test_prometheus_scrapes_the_server(deployment: Deployment) -> None:
    up = deployment.wait_for('up{job="appserver"}', ("job",), lambda v: v.get(("appserver",)) == 1)
    assert up == {("appserver",): 1.0}
    deployment.wait_for('appserver_workers{state="running"}', (),
                        lambda v: v.get(()) == WORKERS)


def test_metrics_are_not_reachable_through_the_public_port(deployment: Deployment) -> None:
    for path in ("/metrics", "/stub_status"):
        response = requests.get(deployment.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.text == "no page here\n"  # the app's own 404, not the metrics
        assert "appserver_" not in response.text and "Active connections" not in response.text
    # The listeners themselves answer on loopback.
    own = requests.get(f"http://127.0.0.1:{deployment.metrics_port}/metrics", timeout=10)
    assert own.status_code == 200 and "appserver_requests_total" in own.text
    status = requests.get(f"http://127.0.0.1:{deployment.status_port}/stub_status", timeout=10)
    assert status.status_code == 200 and status.text.startswith("Active connections:")


def _counts(found: dict[tuple[str, ...], float]) -> bool:
    # The server states every status class from the start, at 0 until counted.
    return {key: n for key, n in found.items() if n} == {key: float(n) for key, n in SENT.items()}


COUNTS = 'sum by (method, status) (appserver_requests_total{method=~"PUT|POST|DELETE"})'


def test_request_counts_match_what_was_sent(deployment: Deployment) -> None:
    session = requests.Session()
    for (method, status), n in SENT.items():
        path = {"2xx": "/ok", "4xx": "/missing", "5xx": "/boom"}[status]
        for _ in range(n):
            response = session.request(method, deployment.url + path, timeout=10)
            assert response.status_code // 100 == int(status[0]), (method, path, response)
    deployment.wait_for(COUNTS, ("method", "status"), _counts)
    durations = deployment.values("sum(appserver_request_duration_seconds_count)")
    assert durations[()] >= sum(SENT.values())


def test_a_sigkilled_worker_shows_as_killed(deployment: Deployment) -> None:
    deployment.wait_for('appserver_workers{state="running"}', (), lambda v: v.get(()) == WORKERS)
    victim = deployment.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deployment.wait_for('sum by (reason) (appserver_worker_restarts_total{reason="killed"})',
                        ("reason",), lambda v: v.get(("killed",)) == 1)
    deployment.wait_for('appserver_workers{state="running"}', (), lambda v: v.get(()) == WORKERS)
    # Nothing the killed worker had counted is lost.
    deployment.wait_for(COUNTS, ("method", "status"), _counts)


def test_a_hung_worker_shows_as_timeout(deployment: Deployment) -> None:
    statuses: list[int] = []

    def hang() -> None:
        statuses.append(requests.get(deployment.url + "/hang", timeout=60).status_code)

    client = threading.Thread(target=hang, daemon=True)
    client.start()
    deployment.wait_for('sum by (reason) (appserver_worker_restarts_total{reason="timeout"})',
                        ("reason",), lambda v: v.get(("timeout",)) == 1)
    client.join(timeout=30)
    assert statuses == [502]  # nginx: the worker holding the request was aborted
    restarts = deployment.values("sum by (reason) (appserver_worker_restarts_total)", "reason")
    assert restarts.get(("killed",)) == 1 and restarts.get(("timeout",)) == 1, restarts
    deployment.wait_for(COUNTS, ("method", "status"), _counts)


def test_nginx_numbers_reach_prometheus(deployment: Deployment) -> None:
    if not deployment.exporter:
        pytest.fail("prometheus-nginx-exporter is not installed (apt-get install "
                    "prometheus-nginx-exporter; ./run-tests does): nginx's numbers cannot be "
                    "scraped")
    deployment.wait_for('up{job="nginx"}', ("job",), lambda v: v.get(("nginx",)) == 1)
    deployment.wait_for("nginx_up", (), lambda v: v.get(()) == 1)
    before = deployment.values("nginx_http_requests_total")[()]
    for _ in range(10):
        assert requests.get(deployment.url + "/ok", timeout=10).status_code == 200
    deployment.wait_for("nginx_http_requests_total", (), lambda v: v.get((), 0) >= before + 10)
    # Connections are counted too (stub_status's "Active connections" and the totals).
    assert deployment.values("nginx_connections_accepted")[()] >= 1


def test_without_the_exporter_the_stack_says_so(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """nginx's numbers need prometheus-nginx-exporter; without it the stack still runs (the
    server's metrics do not depend on it), and `appserver up` prints why the nginx job is empty."""
    monkeypatch.setattr(localstack, "find_exporter", lambda: None)
    (tmp_path / "metricsapp.py").write_text(APP)
    with start_stack("metricsapp:application", directory=tmp_path,
                     settings={"metrics": {"enabled": True}}) as stack:
        assert stack.local.exporter is None and "exporter" not in stack.pids
        assert stack.local.notes == [
            "nginx's numbers: prometheus-nginx-exporter is not installed, so the nginx job of "
            "prometheus.yml finds nothing (Debian: apt-get install prometheus-nginx-exporter)"]
        port = stack.loaded.settings.metrics.port
        assert "appserver_requests_total" in requests.get(
            f"http://127.0.0.1:{port}/metrics", timeout=10).text
