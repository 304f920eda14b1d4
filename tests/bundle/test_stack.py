"""Through real nginx -> unix socket -> appserver, for every sample_app endpoint (local stack).

The settings are the repository's, with the ports made free and the body limit small; the project
is a temporary directory whose sample_app is a symlink to the real one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from appserver.bundle.healthcheck import main as healthcheck_main
from appserver.bundle.healthcheck import probe
from appserver.bundle.loading import load_settings
from appserver.bundle.localstack import LocalStack
from appserver.bundle.tools import self_signed_pair
from appserver.testing import free_port

from .conftest import REPO, dump_toml

pytestmark = pytest.mark.usefixtures("nginx")


def make_stack_project(root: Path, tls: bool = False) -> Path:
    data: dict[str, Any] = tomllib.loads((REPO / "settings.toml").read_text())
    data["server"].update(workers=2)
    data["nginx"].update(client_max_body_size="1m")
    data["compose"].update(published_port=free_port(), published_tls_port=free_port())
    if tls:
        data["nginx"]["tls"].update(enabled=True, certificate="tls/fullchain.pem",
                                    certificate_key="tls/privkey.pem")
    root.mkdir(parents=True)
    (root / "sample_app").symlink_to(REPO / "sample_app")
    if tls:
        self_signed_pair(root / "tls")
    path = root / "settings.toml"
    path.write_text(dump_toml(data))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("stack") / "project"
    loaded = load_settings(make_stack_project(root))
    with LocalStack(loaded, root / "run") as running:
        yield running
    assert running.server is not None and running.nginx is not None
    for proc in (running.server, running.nginx):
        assert proc.returncode is not None
    assert not (root / "run" / "app.sock").exists()


def get(stack: LocalStack, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(stack.url + path, timeout=10, **kwargs)


def test_home_page(stack: LocalStack) -> None:
    response = get(stack, "/")
    assert response.status_code == 200
    assert response.headers["Server"] == "nginx"  # server_tokens off: no version
    assert response.headers["X-Served-By"] == "sample_app"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert '<strong id="remote-addr">127.0.0.1</strong>' in response.text
    assert '<strong id="scheme">http</strong>' in response.text


def test_client_address_and_scheme_come_from_nginx(stack: LocalStack) -> None:
    # A client's own X-Forwarded-* are replaced by nginx, not believed.
    info = get(stack, "/api/info", headers={"X-Forwarded-For": "6.6.6.6",
                                            "X-Forwarded-Proto": "https"}).json()
    assert info["remote_addr"] == "127.0.0.1"
    assert info["forwarded_for"] == "127.0.0.1"
    assert info["scheme"] == "http"
    assert info["host"] == stack.url.removeprefix("http://")  # the client's Host, with its port


def test_json_api(stack: LocalStack) -> None:
    response = requests.post(stack.url + "/api/echo", json={"a": [1, 2, 3]}, timeout=10)
    assert response.status_code == 200
    assert response.json()["echo"] == {"a": [1, 2, 3]}


def test_upload(stack: LocalStack) -> None:
    data = os.urandom(300_000)
    response = requests.post(stack.url + "/upload", files={"file": ("blob.bin", data)},
                             data={"note": "hi"}, timeout=10)
    assert response.status_code == 200
    assert response.json()["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert response.json()["files"][0]["size"] == len(data)


def test_body_limit_is_answered_by_nginx(stack: LocalStack) -> None:
    response = requests.post(stack.url + "/api/echo", data=b"x" * (1024 * 1024 + 1), timeout=10)
    assert response.status_code == 413
    assert "X-Served-By" not in response.headers


def test_streaming_arrives_as_it_is_produced(stack: LocalStack) -> None:
    started = time.monotonic()
    arrivals = []
    with requests.get(stack.url + "/stream?lines=4&delay=0.3", stream=True, timeout=10) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        for line in resp.iter_lines():
            arrivals.append((time.monotonic() - started, line))
    assert [line.split(b" at ")[0] for _, line in arrivals] == [
        b"line 1 of 4", b"line 2 of 4", b"line 3 of 4", b"line 4 of 4"]
    # Unbuffered: the first line came well before the last one was produced (0.9 s later).
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def test_static_files_are_served_by_nginx(stack: LocalStack) -> None:
    css = get(stack, "/static/style.css")
    assert css.status_code == 200
    assert css.headers["Content-Type"] == "text/css"
    assert "X-Served-By" not in css.headers
    assert css.headers["Cache-Control"] == "max-age=3600"
    assert css.content == (REPO / "sample_app" / "static" / "style.css").read_bytes()
    text = get(stack, "/static/hello.txt")
    assert text.content == (REPO / "sample_app" / "static" / "hello.txt").read_bytes()
    assert get(stack, "/static/logo.svg").headers["Content-Type"] == "image/svg+xml"
    missing = get(stack, "/static/missing.css")
    assert missing.status_code == 404 and "X-Served-By" not in missing.headers


def test_health(stack: LocalStack) -> None:
    response = get(stack, "/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


def test_header_limits_agree(stack: LocalStack) -> None:
    """Up to nginx's limit the app answers; past it nginx does, never the server."""
    limit = 8192  # nginx.header_buffer_size
    near = get(stack, "/api/info", headers={"X-Big": "a" * (limit - len("X-Big: ") - 2)})
    assert near.status_code == 200 and near.headers["X-Served-By"] == "sample_app"
    over = get(stack, "/api/info", headers={"X-Big": "a" * limit})
    assert over.status_code == 400 and "X-Served-By" not in over.headers
    long_url = get(stack, "/" + "a" * (limit - len("GET / HTTP/1.1\r\n")))
    assert long_url.status_code == 404 and long_url.headers["X-Served-By"] == "sample_app"
    too_long = get(stack, "/" + "a" * limit)
    assert too_long.status_code == 414 and "X-Served-By" not in too_long.headers


def test_keep_alive_session(stack: LocalStack) -> None:
    with requests.Session() as session:
        pids = {session.get(stack.url + "/api/info", timeout=10).json()["pid"] for _ in range(20)}
    assert pids  # twenty requests on reused connections, all answered


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("tls") / "project"
    loaded = load_settings(make_stack_project(root, tls=True))
    with LocalStack(loaded, root / "run") as running:
        yield running


def test_tls_scheme_reaches_the_app(tls_stack: LocalStack) -> None:
    assert tls_stack.plan is not None
    https_port = tls_stack.loaded.settings.compose.published_tls_port
    redirect = get(tls_stack, "/api/info", allow_redirects=False)
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == f"https://127.0.0.1:{https_port}/api/info"
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        response = requests.get(f"https://127.0.0.1:{https_port}/api/info", verify=False,
                                timeout=10)
    assert response.json()["scheme"] == "https"
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000"


def test_up_command_runs_until_interrupted(tmp_path: Path) -> None:
    settings = make_stack_project(tmp_path / "project")
    port = load_settings(settings).settings.compose.published_port
    proc = subprocess.Popen(
        [sys.executable, "-m", "appserver", "up", "--settings", str(settings),
         "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
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
        pids = [int(word.rstrip(",")) for word in url_line.replace(";", ",").split()
                if word.rstrip(",").isdigit()]
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
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
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_healthcheck_probe(stack: LocalStack) -> None:
    assert stack.plan is not None
    assert probe(stack.plan.socket_path, "/healthz") == (True, "HTTP/1.1 200 OK")
    assert probe(stack.plan.socket_path, "/nope") == (False, "HTTP/1.1 404 Not Found")
    assert healthcheck_main([stack.plan.socket_path, "/healthz"]) == 0
    assert healthcheck_main([stack.plan.socket_path, "/nope"]) == 1


def test_healthcheck_probe_without_a_server(tmp_path: Path) -> None:
    healthy, detail = probe(str(tmp_path / "missing.sock"))
    assert not healthy and "No such file or directory" in detail
    assert healthcheck_main([]) == 2
