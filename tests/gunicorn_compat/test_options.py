"""gunicorn options that change the process around the app: --reuse-port and --capture-output,
each on a real server, beside gunicorn 27 where the observation is the same."""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from ..server.harness import Gunicorn, Launcher, free_port, listening, wait_for
from .conftest import next_run_dir

PRINTING_APP = '''import sys
print("stdout at import", flush=True)
print("stderr at import", file=sys.stderr, flush=True)


def application(environ, start_response):
    print("stdout in", environ["PATH_INFO"], flush=True)
    print("stderr in", environ["PATH_INFO"], file=sys.stderr, flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pid=printed"]
'''


def second_bind(port: int) -> int:
    """Bind a SO_REUSEPORT socket to ``port``: 0, or the errno it fails with."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno or -1
        return 0


@pytest.mark.parametrize("reuse", [True, False])
def test_reuse_port_lets_another_process_bind(launcher: Launcher, gunicorn: Gunicorn,
                                              workdir: Path, reuse: bool) -> None:
    flag = ["--reuse-port"] if reuse else []
    ours = launcher.start("-k", "sync", *flag, bind="tcp", workers=1, app="apps:hello")
    assert ours.port is not None
    port = free_port()
    gunicorn.start("-w", "1", "-b", f"127.0.0.1:{port}", *flag, "apps:hello", cwd=workdir,
                   env={"PYTHONPATH": str(Path(__file__).parents[1] / "server")})
    wait_for(lambda: listening(port), 20, "gunicorn to listen")
    expected = 0 if reuse else errno.EADDRINUSE
    assert (second_bind(ours.port), second_bind(port)) == (expected, expected)



def _get(port: int, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    assert conn.getresponse().read() == b"pid=printed"
    conn.close()


@pytest.mark.parametrize("capture", [True, False])
def test_capture_output_sends_what_the_app_prints_to_the_error_log(launcher: Launcher,
                                                                   capture: bool) -> None:
    run = next_run_dir(launcher)
    (run / "printing.py").write_text(PRINTING_APP)
    errorlog = run / "errors.log"
    flag = ["--capture-output"] if capture else []
    server = launcher.start("-k", "gthread", *flag, "--chdir", str(run), bind="tcp", workers=1,
                            app="printing:application", errorlog=errorlog)
    assert server.port is not None
    _get(server.port, "/first")
    wait_for(lambda: "worker" in errorlog.read_text(), 10, "the error log")
    lines = ["stdout at import", "stderr at import", "stdout in /first", "stderr in /first"]
    if capture:
        wait_for(lambda: all(line in errorlog.read_text() for line in lines), 10,
                 "the printed lines in the error log", details=errorlog.read_text)
        # logrotate: move the file away, USR1, and the next prints reach the new file.
        errorlog.rename(run / "errors.log.1")
        server.signal(signal.SIGUSR1)
        wait_for(lambda: errorlog.exists() and "reopened" in errorlog.read_text(), 10,
                 "the reopened error log")
        _get(server.port, "/second")
        wait_for(lambda: "stdout in /second" in errorlog.read_text(), 10,
                 "a print after the reopen in the new file", details=errorlog.read_text)
    else:
        text = errorlog.read_text()
        assert not any(line in text for line in lines), text
        assert "stdout in /first" in (run / "stdout.log").read_text()  # where it always goes


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()


def test_name_titles_the_processes(launcher: Launcher) -> None:
    """--name web: ps shows "appserver: master [web]" and "appserver: worker [web]" (gunicorn:
    "gunicorn: master [web]").  Found by parentage: setproctitle rewrites /proc/PID/environ."""
    server = launcher.start("-k", "sync", "--name", "web", bind="tcp", workers=2,
                            app="apps:hello")
    assert _cmdline(server.pid) == "appserver: master [web]"
    workers = server.workers()
    assert len(workers) == 2
    assert [_cmdline(pid) for pid in workers] == ["appserver: worker [web]"] * 2


def test_reload_extra_files_with_a_glob(launcher: Launcher) -> None:
    """--reload --reload-extra-file 'templates/**/*.html': a watched file's edit reloads; a file
    created later under the pattern is watched from then on (its creation does not reload, its
    first edit does), as gunicorn 27 documents."""
    run = next_run_dir(launcher)
    templates = run / "templates" / "pages"
    templates.mkdir(parents=True)
    first = templates / "home.html"
    first.write_text("v1")
    pattern = str(run / "templates" / "**" / "*.html")
    server = launcher.start("-k", "sync", "--reload", "--reload-extra-file", pattern,
                            "--reload-extra-file", str(run / "settings.ini"), bind="tcp",
                            workers=1, app="apps:hello")
    time.sleep(1.5)  # the reloader's first look
    os.utime(first, (time.time() + 5, time.time() + 5))
    server.wait_log(r"reload: .*home\.html changed", timeout=10)
    server.wait_log(r"reloaded: generation 2 serves", timeout=20)

    later = templates / "later.html"
    later.write_text("new")
    time.sleep(2.5)  # two checks: its creation is seen, and does not reload
    assert "generation 3" not in server.log()
    os.utime(later, (time.time() + 10, time.time() + 10))
    server.wait_log(r"reload: .*later\.html changed", timeout=10)
    server.wait_log(r"reloaded: generation 3 serves", timeout=20)


def test_reload_extra_files_without_reload_is_said(launcher: Launcher) -> None:
    server = launcher.start("-k", "sync", "--reload-extra-file", "x.html", bind="tcp", workers=1,
                            app="apps:hello")
    server.wait_log("--reload-extra-file has no effect without --reload")
