"""Deployments written the way real projects write them, run by ``appserver serve`` and by
gunicorn 27 with the program name swapped and nothing else: a Django project's
``gunicorn.conf.py``, a Flask app factory on the command line, a Heroku ``Procfile`` with
``$PORT`` and ``WEB_CONCURRENCY``, and a Docker entrypoint that configures the server through
``GUNICORN_CMD_ARGS``.  Each test checks what the deployment would observe, on both servers:
the bind answers, the number of workers, the environment reaching the app, the hooks' effects
and the access log's lines.

(Hooks, logging configs, StatsD, TLS, PROXY headers and --user/--group have corpora of their own
beside this file.)
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..server.harness import SCRUBBED, children, free_port, signal_pid, wait_for

REPO = Path(__file__).resolve().parents[2]

PROGRAMS = {
    "ours": [sys.executable, "-m", "appserver", "serve"],
    # Its control socket would live in $HOME: the tests give it a HOME of its own instead.
    "gunicorn": [sys.executable, "-m", "gunicorn"],
}


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    cwd: Path

    @property
    def output(self) -> str:
        return (self.cwd / "server.out").read_text(errors="replace")


@dataclass
class Processes:
    """Every server a test starts; all stopped (TERM, then KILL) when the test ends."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Running:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("APPSERVER_", "GUNICORN_")) and k not in SCRUBBED}
        environ.update(PYTHONPATH=str(REPO), HOME=str(cwd))
        environ.update(env)
        with open(cwd / "server.out", "ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, env=environ, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL)
        self.started.append(proc)
        return Running(proc, cwd)

    def close(self) -> None:
        for proc in self.started:
            kids = children(proc.pid)
            if proc.poll() is None:
                signal_pid(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    signal_pid(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            for pid in kids:
                signal_pid(pid, signal.SIGKILL)


@pytest.fixture
def processes() -> Iterator[Processes]:
    running = Processes()
    try:
        yield running
    finally:
        running.close()


def get(port: int, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"User-Agent": "corpus/1.0", "Referer": "http://r/"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        return get(port)[0] == 200
    except OSError:
        return False


def settled_workers(run: Running, expected: int) -> int:
    """The master's children once their number has held still for a second (or the last
    count after 20 s)."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        count = len(children(run.proc.pid))
        if count != last:
            last, since = count, time.monotonic()
        elif count == expected and time.monotonic() - since >= 1.0:
            break
        time.sleep(0.1)
    return last


def stop(run: Running) -> int:
    run.proc.send_signal(signal.SIGTERM)
    return run.proc.wait(20)


def both(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    for name in PROGRAMS:
        directory = tmp_path / name
        directory.mkdir()
        yield name, directory


def write(directory: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# ---- a Django project ---------------------------------------------------------------------

DJANGO = {
    "src/mysite/__init__.py": "",
    "src/mysite/settings.py": '''
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "corpus-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": BASE_DIR.parent / "db.sqlite3"}}
APP_ENV = os.environ.get("APP_ENV", "unset")
USE_TZ = True
''',
    "src/mysite/urls.py": '''
from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.urls import path


def index(request):
    with connection.cursor() as cursor:
        cursor.execute("select 1")
        one = cursor.fetchone()[0]
    return HttpResponse(f"{settings.APP_ENV} {request.scheme} db={one}")


urlpatterns = [path("", index)]
''',
    "src/mysite/wsgi.py": '''
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
''',
    "gunicorn.conf.py": '''
import multiprocessing
import os

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = 4
pythonpath = "src"
wsgi_app = "mysite.wsgi:application"
raw_env = ["DJANGO_SETTINGS_MODULE=mysite.settings", "APP_ENV=production"]
accesslog = "access.log"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
errorlog = "-"
loglevel = "info"
max_requests = 1000
max_requests_jitter = 50
timeout = 30
graceful_timeout = 20
forwarded_allow_ips = "127.0.0.1"


def post_fork(server, worker):
    # The classic: never share the master's database connections with a worker.
    from django.db import connections

    connections.close_all()
    server.log.info("worker %s: database connections reset", worker.pid)
''',
}

ACCESS_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET / HTTP/1\.1" 200 '
    r'\d+ "http://r/" "corpus/1\.0" \d+$')


def test_a_django_projects_gunicorn_conf(tmp_path: Path, processes: Processes) -> None:
    for name, directory in both(tmp_path):
        write(directory, DJANGO)
        port = free_port()
        run = processes.start(PROGRAMS[name], directory,
                              {"PORT": str(port), "GUNICORN_WORKERS": "2"})
        wait_for(lambda: answers(port), 30, f"{name} to answer",  # noqa: B023
                 details=lambda: run.output[-3000:])  # noqa: B023
        assert get(port) == (200, "production http db=1"), name
        assert settled_workers(run, 2) == 2, name
        assert stop(run) == 0, name
        lines = (directory / "access.log").read_text().splitlines()
        assert len(lines) >= 2 and all(ACCESS_LINE.match(line) for line in lines), (name, lines)
        assert run.output.count("database connections reset") == 2, (name, run.output[-3000:])


# ---- a Flask app factory on the command line ----------------------------------------------

FLASK = {
    "shop/__init__.py": '''
import os

from flask import Flask, request


def create_app():
    app = Flask(__name__)

    @app.get("/")
    def index():
        return f"{os.environ['GREETING']} from {request.environ['SERVER_PORT']}"

    return app
''',
}


def test_a_flask_factory_command_line(tmp_path: Path, processes: Processes) -> None:
    for name, directory in both(tmp_path):
        write(directory, FLASK)
        port = free_port()
        argv = ["-w", "2", "-k", "gthread", "--threads", "4", "-b", f"127.0.0.1:{port}",
                "--access-logfile", "-", "-e", "GREETING=hello", "--graceful-timeout", "10",
                "shop:create_app()"]
        run = processes.start(PROGRAMS[name] + argv, directory, {})
        wait_for(lambda: answers(port), 30, f"{name} to answer",  # noqa: B023
                 details=lambda: run.output[-3000:])  # noqa: B023
        assert get(port) == (200, f"hello from {port}"), name
        assert settled_workers(run, 2) == 2, name
        assert stop(run) == 0, name
        # The access log went to stdout, in gunicorn's default (common) format... ours logs
        # the combined format by default (documented): both carry the common part.
        assert re.search(r'"GET / HTTP/1\.1" 200 \d+', run.output), (name, run.output[-2000:])


# ---- a Heroku Procfile ----------------------------------------------------------------------

HEROKU = {
    "Procfile": "web: gunicorn hello:app --log-file -\n",
    "hello.py": '''
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"dyno {os.environ.get('DYNO', '?')}".encode()]
''',
}


def procfile_command(directory: Path, program: list[str]) -> list[str]:
    """The Procfile's web command, with the program name swapped as the README says."""
    line = next(line for line in (directory / "Procfile").read_text().splitlines()
                if line.startswith("web:"))
    argv = shlex.split(line.removeprefix("web:"))
    assert argv[0] == "gunicorn"
    return program + argv[1:]


def test_a_heroku_procfile_with_port_and_web_concurrency(tmp_path: Path,
                                                         processes: Processes) -> None:
    for name, directory in both(tmp_path):
        write(directory, HEROKU)
        port = free_port()
        run = processes.start(procfile_command(directory, PROGRAMS[name]), directory,
                              {"PORT": str(port), "WEB_CONCURRENCY": "3", "DYNO": "web.1"})
        # No bind anywhere: $PORT on every interface is the default (gunicorn's rule).
        wait_for(lambda: answers(port), 30, f"{name} to answer",  # noqa: B023
                 details=lambda: run.output[-3000:])  # noqa: B023
        assert get(port) == (200, "dyno web.1"), name
        assert settled_workers(run, 3) == 3, name
        assert stop(run) == 0, name
        assert re.search(r"0\.0\.0\.0:" + str(port), run.output), (name, run.output[-2000:])


# ---- a Docker entrypoint ----------------------------------------------------------------------

ENTRYPOINT = {
    "docker-entrypoint.sh": '''#!/bin/sh
set -e
# Settings from the image's environment, then the server; "$@" lets `docker run` add flags.
export GUNICORN_CMD_ARGS="--bind=127.0.0.1:${PORT} --workers=${WORKERS:-4} \\
--worker-class=${WORKER_CLASS:-sync} --access-logfile=- --log-level=debug \\
--env=RELEASE=${RELEASE:-dev} ${GUNICORN_CMD_ARGS:-}"
exec $SERVER "$@" "${APP_MODULE:-api:app}"
''',
    "api.py": '''
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"release {os.environ.get('RELEASE')}".encode()]
''',
}


def test_a_docker_entrypoint_with_gunicorn_cmd_args(tmp_path: Path,
                                                    processes: Processes) -> None:
    for name, directory in both(tmp_path):
        write(directory, ENTRYPOINT)
        port = free_port()
        env = {"PORT": str(port), "WORKERS": "2", "RELEASE": "1.4.2",
               "SERVER": shlex.join(PROGRAMS[name])}
        run = processes.start(["sh", "docker-entrypoint.sh", "--timeout", "20"], directory, env)
        wait_for(lambda: answers(port), 30, f"{name} to answer",  # noqa: B023
                 details=lambda: run.output[-3000:])  # noqa: B023
        assert get(port) == (200, "release 1.4.2"), name
        assert settled_workers(run, 2) == 2, name
        assert stop(run) == 0, name
        # --log-level=debug reached the server: its debug lines are in the output.
        assert re.search(r"\[DEBUG\]", run.output), (name, run.output[-2000:])


@pytest.mark.parametrize("variable", ["GUNICORN_CMD_ARGS", "APPSERVER_CMD_ARGS"])
def test_check_config_from_the_environment(tmp_path: Path, variable: str) -> None:
    """A CI step runs the image with ``GUNICORN_CMD_ARGS=--check-config``: the server checks
    the settings and the app, then exits 0, without serving (gunicorn honours it there)."""
    write(tmp_path, ENTRYPOINT)
    environ = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    results = {}
    for name, program in PROGRAMS.items():
        if name == "gunicorn" and variable == "APPSERVER_CMD_ARGS":
            continue
        env = {**environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "PORT": "1",
               "SERVER": shlex.join(program), variable: "--check-config"}
        done = subprocess.run(["sh", "docker-entrypoint.sh"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=30)
        results[name] = done.returncode
        broken = subprocess.run(["sh", "docker-entrypoint.sh"], cwd=tmp_path,
                                env={**env, "APP_MODULE": "nosuchmodule:app"},
                                capture_output=True, text=True, timeout=30)
        assert broken.returncode != 0, (name, broken.stdout, broken.stderr)
    assert set(results.values()) == {0}, results
