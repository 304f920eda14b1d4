"""gunicorn options that change the process around the app: --reuse-port and --capture-output,
each on a real server, beside gunicorn 27 where the observation is the same."""

from __future__ import annotations

import errno
import http.client
import signal
import socket
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
