"""Through real nginx -> unix socket -> appserver, for every sample_app endpoint (local stack).

The stacks come from the integration harness (``appserver_stack_factory``, the package's pytest
plugin): the repository's settings.toml with two workers and a small body limit, on free ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from appserver.bundle.healthcheck import main as healthcheck_main
from appserver.bundle.healthcheck import probe
from appserver.bundle.tools import self_signed_pair
from appserver.testing import free_port
from appserver.testing.plugin import StackFactory
from appserver.testing.stack import Stack

from . import endpoints
from .conftest import REPO, make_project

pytestmark = pytest.mark.usefixtures("nginx")

BODY_LIMIT = 1 << 20
OVERRIDES: dict[str, dict[str, Any]] = {"server": {"workers": 2},
                                        "nginx": {"client_max_body_size": "1m"}}


@pytest.fixture(scope="module")
def stack(appserver_stack_factory: StackFactory) -> Iterator[Stack]:
    with appserver_stack_factory(settings_file=REPO / "settings.toml", settings=OVERRIDES) as running:
        yield running
    # Both masters stopped gracefully (exit 0), and nothing of either is left (stop() checks).
    assert running.stopped is not None and running.stopped.graceful, running.stopped
    assert not Path(running.socket_path).exists()


@pytest.mark.parametrize("check", endpoints.CHECKS, ids=lambda check: check.__name__)
def test_endpoint(stack: Stack, check: Callable[[endpoints.Target], None]) -> None:
    check(endpoints.Target(stack.url, client_address="127.0.0.1", body_limit=BODY_LIMIT))


@pytest.fixture(scope="module")
def tls_stack(appserver_stack_factory: StackFactory,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cert, key = self_signed_pair(tmp_path_factory.mktemp("tls"))
    tls = {"enabled": True, "certificate": str(cert), "certificate_key": str(key)}
    with appserver_stack_factory(settings_file=REPO / "settings.toml",
                                 settings={**OVERRIDES, "nginx": {**OVERRIDES["nginx"],
                                                                  "tls": tls}}) as running:
        yield running


def test_tls_scheme_reaches_the_app(tls_stack: Stack) -> None:
    assert tls_stack.https_url is not None
    redirect = requests.get(tls_stack.url + "/api/info", allow_redirects=False, timeout=10)
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == f"{tls_stack.https_url}/api/info"
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        response = requests.get(f"{tls_stack.https_url}/api/info", verify=False, timeout=10)
    assert response.json()["scheme"] == "https"
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000"


def _bare_project(root: Path) -> Path:
    return make_project(root, {"app": {"module": "myapp:application"},
                               "nginx": {"static_dir": "static"}})


def test_plain_up_in_a_project_runs_until_interrupted(tmp_path: Path) -> None:
    """`appserver up` with no arguments but the port, from a project that has a file named
    `run` (as this repository does): the default run directory is .appserver/ beside the
    settings file, and Ctrl-C stops everything and removes the socket and pid files."""
    project = _bare_project(tmp_path / "project").parent
    (project / "run").write_text("#!/bin/sh\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "appserver", "up", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=project)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        url_line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("appserver up: http://"):
                url_line = line
                break
        assert url_line.startswith(f"appserver up: http://127.0.0.1:{port}/"), url_line
        assert f"run dir {project / '.appserver'})" in url_line
        pids = [int(word.rstrip(",")) for word in url_line.replace(";", ",").split()
                if word.rstrip(",").isdigit()]
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "ok"
        assert (project / ".appserver" / "app.sock").exists()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, output
    assert "SIGINT: stopping nginx, then the app server" in output
    for pid in pids:  # nginx's and the server's masters
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    left = sorted(p.name for p in (project / ".appserver").iterdir()
                  if p.suffix in (".sock", ".pid"))
    assert left == []


@pytest.mark.parametrize("obstacle", ["file", "parent file", "too deep"])
def test_unusable_run_dir_is_a_clear_error(tmp_path: Path, obstacle: str) -> None:
    project = _bare_project(tmp_path / "project").parent
    args = ["--port", str(free_port())]
    if obstacle == "file":
        (project / ".appserver").write_text("mine\n")
        named = project / ".appserver"
    elif obstacle == "parent file":
        (project / "state").write_text("mine\n")
        named = project / "state"
        args += ["--run-dir", "state/run"]
    else:
        named = project / ("d" * 100)
        args += ["--run-dir", str(named)]
    result = subprocess.run([sys.executable, "-m", "appserver", "up", *args], cwd=project,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert str(named) in result.stderr and "--run-dir DIR" in result.stderr, result.stderr
    if obstacle == "too deep":
        assert "at most 107" in result.stderr
    else:
        assert named.read_text() == "mine\n"  # left as it was


def test_healthcheck_probe(stack: Stack) -> None:
    assert probe(stack.socket_path, "/healthz") == (True, "HTTP/1.1 200 OK")
    assert probe(stack.socket_path, "/nope") == (False, "HTTP/1.1 404 Not Found")
    assert healthcheck_main([stack.socket_path, "/healthz"]) == 0
    assert healthcheck_main([stack.socket_path, "/nope"]) == 1


def test_healthcheck_probe_without_a_server(tmp_path: Path) -> None:
    healthy, detail = probe(str(tmp_path / "missing.sock"))
    assert not healthy and "No such file or directory" in detail
    assert healthcheck_main([]) == 2
