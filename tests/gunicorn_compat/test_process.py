"""gunicorn's process settings on real processes: --daemon and --enable-stdio-inheritance, --spew,
--paste/--paste-global (a real PasteDeploy ini and app factory, beside gunicorn 27) and
tmp_upload_dir (accepted and unused, as in gunicorn 27)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..server.harness import (
    HERE,
    TOKEN_VAR,
    Gunicorn,
    Launcher,
    alive,
    free_port,
    listening,
    signal_pid,
    token_pids,
    wait_for,
)
from .conftest import appserver_run, next_run_dir

# ---- --daemon --------------------------------------------------------------------------------


@dataclass
class Daemon:
    """An ``appserver serve -D`` run: the launching command's result and where things are."""

    launch: subprocess.CompletedProcess[bytes]
    launch_pid: int
    seconds: float
    port: int
    pidfile: Path
    stderr: Path
    token: str


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def ancestors() -> set[int]:
    """This process's ancestors: where an orphan may be re-parented (init or a subreaper)."""
    found, pid = set(), os.getpid()
    while pid > 1:
        pid = int(_stat(pid)[1])
        found.add(pid)
    return found | {1}


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:  # TERM the master if it runs, then KILL whatever of the run is left
        if daemon.pidfile.exists():
            signal_pid(int(daemon.pidfile.read_text()), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while token_pids(daemon.token) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in token_pids(daemon.token):
            signal_pid(pid, signal.SIGKILL)


def start_daemon(daemons: list[Daemon], directory: Path, *options: str) -> Daemon:
    port, token = free_port(), uuid.uuid4().hex
    pidfile, stderr = directory / "server.pid", directory / "launch.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPSERVER_")}
    env.update({TOKEN_VAR: token, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"})
    argv = [sys.executable, "-m", "appserver", "serve", "-D", "--pid", str(pidfile), "-w", "1",
            "-b", f"127.0.0.1:{port}", *options, "apps:hello"]
    started = time.monotonic()
    # Files, not pipes: with -R the daemon keeps them, and a pipe would never reach EOF.
    with open(stderr, "wb") as err, open(directory / "launch.stdout", "wb") as out:
        proc = subprocess.Popen(argv, cwd=directory, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        code = proc.wait(20)
    daemon = Daemon(subprocess.CompletedProcess(argv, code), proc.pid, time.monotonic() - started,
                    port, pidfile, stderr, token)
    daemons.append(daemon)
    return daemon


def get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_daemon_detaches_and_stops_on_term(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start_daemon(daemons, tmp_path)
    assert daemon.launch.returncode == 0, daemon.stderr.read_text()
    assert daemon.seconds < 5  # it returned at once: the daemon boots on its own
    wait_for(lambda: daemon.pidfile.exists() and listening(daemon.port), 20,
             "the daemon to listen", details=lambda: daemon.stderr.read_text())
    pid = int(daemon.pidfile.read_text())
    assert pid != daemon.launch_pid and alive(pid)
    assert int(_stat(pid)[1]) in ancestors()  # re-parented to init or a subreaper
    assert os.getsid(pid) != os.getsid(0) and os.getsid(pid) != pid  # no terminal, ever
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)  # the directory is kept
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/2") == "/dev/null"  # without -R
    assert get(daemon.port).startswith("pid=")
    assert set(token_pids(daemon.token)) == {pid, *(int(p) for p in _children(pid))}
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not token_pids(daemon.token), 20, "every process of the daemon to exit")
    assert not daemon.pidfile.exists()
    # Its stderr went to /dev/null: nothing reached the launcher's file after the fork.
    assert "listening" not in daemon.stderr.read_text()


def _children(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return fh.read().split()


def test_stdio_inheritance_keeps_a_redirected_stderr(tmp_path: Path, daemons: list[Daemon]) -> None:
    daemon = start_daemon(daemons, tmp_path, "-R", "--access-logfile", "-")
    assert daemon.launch.returncode == 0
    wait_for(lambda: "booted" in daemon.stderr.read_text(), 20,
             "the error log (stderr) in the launcher's file",
             details=lambda: daemon.stderr.read_text())
    pid = int(daemon.pidfile.read_text())
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"  # stdin never
    assert "listening on 127.0.0.1" in daemon.stderr.read_text()
    get(daemon.port)
    wait_for(lambda: '"GET / HTTP/1.1" 200' in (tmp_path / "launch.stdout").read_text(), 10,
             "the access log (stdout) in the launcher's file")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not token_pids(daemon.token), 20, "every process of the daemon to exit")


def test_check_config_does_not_detach(tmp_path: Path) -> None:
    done = appserver_run("-D", "--check-config", "apps:hello", cwd=tmp_path,
                         env={"PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert done.returncode == 0 and "are OK" in done.stdout, done.stderr


# ---- --spew ----------------------------------------------------------------------------------

SPEW_APP = '''def application(environ, start_response):
    marker = "spew-" + environ["PATH_INFO"].strip("/")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [marker.encode()]
'''


@pytest.mark.parametrize("spew", [True, False])
def test_spew_prints_every_line_the_app_runs(launcher: Launcher, spew: bool) -> None:
    run = next_run_dir(launcher)
    (run / "spewapp.py").write_text(SPEW_APP)
    flag = ["--spew"] if spew else []
    # gthread: requests run in pool threads, which threading.settrace covers.
    server = launcher.start("-k", "gthread", "--threads", "2", *flag, "--chdir", str(run),
                            bind="tcp", workers=1, app="spewapp:application", timeout=30)
    assert server.get("/traced").body == b"spew-traced"
    stdout = run / "stdout.log"
    line = 'spewapp:2:     marker = "spew-" + environ["PATH_INFO"].strip("/")'
    if spew:
        wait_for(lambda: line in stdout.read_text(errors="replace"), 15, "the app's traced line")
        text = stdout.read_text(errors="replace")
        assert "spewapp:3:     start_response(" in text
        assert "spewapp:1: def application(environ, start_response):" in text  # the import
    else:
        time.sleep(0.3)
        assert "spewapp:" not in stdout.read_text(errors="replace")


# ---- --paste ---------------------------------------------------------------------------------

PASTE_APP = '''import logging


def make_app(global_conf, greeting="hi", **local_conf):
    here = global_conf.get("here", "?")
    extra = global_conf.get("FOO", "-")

    def application(environ, start_response):
        logging.getLogger("pasteapp").info("served %s", environ["PATH_INFO"])
        body = f"{greeting} FOO={extra} here={here}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return application
'''

PASTE_INI = '''[app:main]
use = call:pasteapp:make_app
greeting = hello

[app:admin]
use = call:pasteapp:make_app
greeting = admin

[server:main]
use = egg:gunicorn#main
host = 127.0.0.1
port = 1
'''


def paste_project(directory: Path) -> Path:
    (directory / "pasteapp.py").write_text(PASTE_APP)
    (directory / "app.ini").write_text(PASTE_INI)
    return directory


@pytest.mark.parametrize(("args", "body"), [
    (["--paste", "app.ini"], "hello FOO=- here={here}"),
    (["--paster", "app.ini#admin", "--paste-global", "FOO=a\\=b"], "admin FOO=a=b here={here}"),
])
def test_paste_loads_the_ini_app_as_gunicorn(launcher: Launcher, gunicorn: Gunicorn,
                                             args: list[str], body: str) -> None:
    run = paste_project(next_run_dir(launcher))
    # [server:main] is not read (its port 1 would fail): the command line's bind counts.
    server = launcher.start("-k", "sync", *args, bind="tcp", workers=1, app="")
    assert server.port is not None
    expected = body.format(here=run)
    assert server.get("/").body.decode() == expected
    port = free_port()
    gunicorn.start("-w", "1", "-b", f"127.0.0.1:{port}", *args, cwd=run)
    wait_for(lambda: listening(port), 20, "gunicorn to listen",
             details=lambda: (run / "gunicorn.stderr").read_text())
    assert get(port) == expected


LOGGING_SECTIONS = '''
[loggers]
keys = root, pasteapp

[handlers]
keys = file

[formatters]
keys = plain

[logger_root]
level = WARNING
handlers =

[logger_pasteapp]
level = INFO
handlers = file
qualname = pasteapp

[handler_file]
class = FileHandler
args = ('%(here)s/app.log', 'a')
formatter = plain

[formatter_plain]
format = %(name)s: %(message)s
'''


def test_the_ini_logging_sections_are_the_default_logconfig(launcher: Launcher,
                                                              gunicorn: Gunicorn) -> None:
    run = paste_project(next_run_dir(launcher))
    (run / "app.ini").write_text(PASTE_INI + LOGGING_SECTIONS)
    done = appserver_run("--paste", "app.ini", "--print-config", cwd=run)
    assert f'logconfig = "{run}/app.ini"' in done.stdout, done.stderr
    done = appserver_run("--paste", "app.ini", "--log-config", "other.ini", "--print-config",
                         cwd=run)
    assert 'logconfig = "other.ini"' in done.stdout, done.stderr
    theirs = gunicorn.run("--paste", "app.ini", "--print-config", cwd=run)
    assert re.search(rf"^logconfig\s+= {re.escape(str(run))}/app.ini$", theirs.stdout, re.M)
    server = launcher.start("-k", "sync", "--paste", "app.ini", bind="tcp", workers=1, app="")
    server.get("/logged")
    wait_for(lambda: "pasteapp: served /logged" in (run / "app.log").read_text(), 10,
             "the app's log line in the ini's log file")


def test_paste_check_config_and_errors(tmp_path: Path) -> None:
    cwd = paste_project(tmp_path)
    done = appserver_run("--paste", "app.ini", "--check-config", cwd=cwd)
    assert done.returncode == 0 and f"--paste {cwd}/app.ini are OK" in done.stdout, done.stderr
    done = appserver_run("--paste", "app.ini#nosuch", "--check-config", cwd=cwd)
    assert done.returncode == 4 and "nosuch" in done.stderr
    done = appserver_run("--paste", "missing.ini", "--check-config", cwd=cwd)
    assert done.returncode == 2 and "missing.ini: no such file" in done.stderr


def test_paste_without_pastedeploy_names_the_extra(tmp_path: Path) -> None:
    cwd = paste_project(tmp_path)
    # PasteDeploy is installed here: a sitecustomize hides it from the server's process, as
    # if it were not (an import of a module that is None in sys.modules fails).
    (cwd / "hide").mkdir()
    (cwd / "hide" / "sitecustomize.py").write_text("import sys\nsys.modules['paste.deploy'] = None\n")
    repo = Path(__file__).resolve().parents[2]
    done = appserver_run("--paste", "app.ini", "-w", "1", "-b", f"127.0.0.1:{free_port()}",
                         cwd=cwd, env={"PYTHONPATH": f"{cwd / 'hide'}{os.pathsep}{repo}"},
                         timeout=15)
    assert done.returncode == 4
    assert "--paste needs PasteDeploy" in done.stderr and "appserver[paste]" in done.stderr


# ---- tmp_upload_dir ----------------------------------------------------------------------------


def test_tmp_upload_dir_is_accepted_and_unused(launcher: Launcher, tmp_path: Path) -> None:
    run = next_run_dir(launcher)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (run / "gunicorn.conf.py").write_text(f"tmp_upload_dir = {str(uploads)!r}\n")
    server = launcher.start("--log-level", "debug", bind="tcp", workers=1)
    server.wait_log(r"tmp_upload_dir .*uploads: accepted and unused")
    assert not list(uploads.iterdir())
    (run / "gunicorn.conf.py").write_text(f"tmp_upload_dir = {str(tmp_path / 'nope')!r}\n")
    done = appserver_run("--print-config", cwd=run)
    assert done.returncode == 2 and "tmp_upload_dir" in done.stderr
    assert "not a directory" in done.stderr
