"""Helpers of the metrics tests: start a server with metrics on, scrape it, ask its control
socket."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.server.harness import HERE as SERVER_TESTS
from tests.server.harness import Launcher, Server, UnixHTTPConnection, free_port

METRICS_TESTS = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": f"{SERVER_TESTS}:{METRICS_TESTS}"}
CLASSES = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
    "asgi": ["-k", "asgi"],
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Metered:
    """A running server with its metrics address and control socket."""

    def __init__(self, server: Server, port: int | None, metrics_path: str | None,
                 control: str) -> None:
        self.server = server
        self.port = port
        self.metrics_path = metrics_path
        self.control = control

    def scrape_text(self, path: str = "/metrics") -> tuple[int, str, str]:
        conn: http.client.HTTPConnection
        if self.metrics_path:
            conn = UnixHTTPConnection(self.metrics_path, timeout=10)
        else:
            assert self.port is not None
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), \
                response.read().decode()
        finally:
            conn.close()

    def scrape(self) -> Samples:
        status, _, text = self.scrape_text()
        assert status == 200, text
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def ask(self, command: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(self.control)
            sock.sendall(command.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        reply: dict[str, Any] = json.loads(data)
        return reply

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appserver", *args,
                               "--control", f"unix:{self.control}"],
                              capture_output=True, text=True, timeout=30, check=False)


def start(launcher: Launcher, kind: str, *options: str, unix_metrics: bool = False,
          workers: int = 2, wait: bool = True) -> Metered:
    run = launcher.workdir
    control = str(run / f"ctl{len(launcher.servers)}.sock")
    port = None if unix_metrics else free_port()
    metrics_path = str(run / f"metrics{len(launcher.servers)}.sock") if unix_metrics else None
    bind = f"unix:{metrics_path}" if metrics_path else f"127.0.0.1:{port}"
    app = "metrics_apps:asgi_app" if kind == "asgi" else "metrics_apps:app"
    server = launcher.start(*CLASSES[kind], "--metrics-bind", bind, "--control-socket", control,
                            *options, app=app, env=ENV, workers=workers, wait=wait)
    return Metered(server, port, metrics_path, control)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
