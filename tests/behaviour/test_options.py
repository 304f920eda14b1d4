"""Options that change how the server runs: each on a real server of its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

from appserver.testing import AppServerProcess

from .client import exchange

APP = '''
import os

def create(label="factory"):
    def app(environ, start_response):
        body = (label + " " + os.environ.get("GREETING", "-") + " " + VERSION).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app

VERSION = "v1"
app = create("plain")
'''


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None, workers: int = 1) -> tuple[AppServerProcess, str]:
    (tmp_path / "optapp.py").write_text(APP)
    address = f"unix:{tmp_path / 'app.sock'}"
    process = AppServerProcess(["-b", address, "--chdir", str(tmp_path), *args],
                               log_path=tmp_path / "error.log", env=env)
    process.start(wait_for=[address], workers=workers)
    return process, address


def _get(address: str) -> bytes:
    return exchange(address, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").body


def test_factory_env_and_worker_count_from_environment(tmp_path: Path) -> None:
    process, address = _start(tmp_path, "-e", "GREETING=hello", "optapp:create('made')",
                              env={"WEB_CONCURRENCY": "3"}, workers=3)
    try:
        assert _get(address) == b"made hello v1"
        assert len(process.worker_pids()) == 3
    finally:
        assert process.stop() == 0


def test_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text('[server]\nworkers = 2\nwsgi_app = "optapp:app"\nraw_env = ["GREETING=from-file"]\n')
    process, address = _start(tmp_path, "--settings", str(settings), workers=2)
    try:
        assert _get(address) == b"plain from-file v1"
        assert len(process.worker_pids()) == 2
    finally:
        assert process.stop() == 0


def test_reload_on_code_change(tmp_path: Path) -> None:
    process, address = _start(tmp_path, "-w", "2", "--reload", "optapp:app", workers=2)
    try:
        assert _get(address).endswith(b"v1")
        time.sleep(1.1)  # a different mtime, whatever the file system's resolution
        module = tmp_path / "optapp.py"
        module.write_text(module.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
        process.wait_for_log("changed; asking the master to reload", timeout=15)
        # The new generation takes over once all its workers booted; the old ones then retire.
        process.wait_for_log(r"reloaded: generation 2 serves", timeout=30)
        process.wait_for_log(r"worker \d+ exited", count=2, timeout=30)
        assert all(_get(address).endswith(b"v2") for _ in range(6))
    finally:
        assert process.stop() == 0


def test_json_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    process, address = _start(tmp_path, "--access-logfile", str(log), "--access-log-json", "optapp:app")
    try:
        exchange(address, b"GET /?q=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: probe\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n")
        deadline = time.monotonic() + 5
        while not log.exists() or not log.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["method"] == "GET" and entry["uri"] == "/?q=1" and entry["status"] == 200
        assert entry["user_agent"] == "probe" and entry["remote_addr"] == "198.51.100.4"
        assert entry["bytes"] == len(b"plain - v1") and entry["duration_ms"] >= 0
    finally:
        assert process.stop() == 0


TORNADO_APP = """
import tornado.web

class Main(tornado.web.RequestHandler):
    def get(self):
        self.write("tornado " + self.request.remote_ip + " " + self.request.protocol)

application = tornado.web.Application([(r"/", Main)])
"""


def test_tornado_application(tmp_path: Path) -> None:
    (tmp_path / "tornadoapp.py").write_text(TORNADO_APP)
    log = tmp_path / "access.log"
    address = f"unix:{tmp_path / 'app.sock'}"
    process = AppServerProcess(["-k", "tornado", "-b", address, "--chdir", str(tmp_path),
                                "--access-logfile", str(log), "tornadoapp:application"],
                               log_path=tmp_path / "error.log")
    process.start(wait_for=[address], workers=1)
    try:
        response = exchange(address, b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n"
                            b"X-Forwarded-Proto: https\r\n\r\n")
        # A unix-socket peer is nginx: its forwarded headers are believed.
        assert response.status == 200 and response.body == b"tornado 203.0.113.9 https"
        deadline = time.monotonic() + 5
        while "GET / HTTP/1.1" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.05)
    finally:
        assert process.stop() == 0
