"""Start-up in a broken environment: a clear error, a non-zero exit, nothing half-started.

Each case runs the real command (``python -m appserver serve`` or ``appserver up``) as a
subprocess with a unique token in its environment, and checks:

* it exits non-zero within a bounded time;
* its error names the problem and the fix, without a traceback;
* no process of that run is left (``/proc/*/environ`` is scanned for the token, so workers
  re-parented after their master exited would be found too), no worker ever booted;
* no socket file or pid file was created: every ``serve`` case also binds a good unix socket
  (``ok.sock``) and asks for a pid file, so a start that fails half-way shows up here.

The ``serve`` cases run with the default (WSGI) class and, when ``asgi`` is among the selected
classes (``RELIABILITY_WORKER_CLASSES``), again on ``-k asgi`` with the ASGI twin of the app
(rows marked "(-k asgi)"); three cases belong to the ASGI interface alone: a lifespan startup
that fails, and an app of the wrong interface either way.

Each outcome is a row of the "environment" table of docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appserver._build import PURE_ENV  # the build under test (./run-tests' pure pass): kept
from appserver.bundle.tools import NGINX_INSTALL_HINT
from tests.reliability.common import app_for, selected_classes
from tests.reliability.report import Recorder
from tests.server.harness import TOKEN_VAR, Launcher, signal_pid, token_pids

HERE = Path(__file__).resolve().parent
DEADLINE = 20.0         # no case may take longer than this to fail
QUICK = 10.0            # ... and each must fail well within it
SETPRIV = shutil.which("setpriv")
# root ignores directory permissions: the unwritable cases drop CAP_DAC_OVERRIDE for the command.
AS_PLAIN_USER = ([SETPRIV, "--bounding-set", "-dac_override,-dac_read_search"]
                 if os.geteuid() == 0 and SETPRIV else [])
needs_permissions = pytest.mark.skipif(
    os.geteuid() == 0 and not SETPRIV,
    reason="running as root without setpriv: file permissions cannot be enforced")


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str
    seconds: float
    left: list[int]          # processes of the run still alive after it exited


def run_command(argv: list[str], cwd: Path, *, prefix: list[str] | None = None,
                env: dict[str, str] | None = None) -> Run:
    token = uuid.uuid4().hex
    environ = {k: v for k, v in os.environ.items()
               if (not k.startswith("APPSERVER_") or k == PURE_ENV) and k != "WEB_CONCURRENCY"}
    environ.update({TOKEN_VAR: token, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"})
    environ.update(env or {})
    started = time.monotonic()
    proc = subprocess.Popen([*(prefix or []), *argv], cwd=cwd, env=environ, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        for pid in token_pids(token):
            signal_pid(pid, signal.SIGKILL)
        proc.kill()
        out, err = proc.communicate(timeout=5)
        raise AssertionError(f"{argv} did not exit within {DEADLINE}s\n{err[-3000:]}") from None
    seconds = time.monotonic() - started
    time.sleep(0.2)  # an orphaned worker would still be running now
    left = token_pids(token)
    for pid in left:
        signal_pid(pid, signal.SIGKILL)
    return Run(proc.returncode, out, err, seconds, left)


# The interfaces the serve cases run on: the default class (WSGI), and -k asgi when selected.
KINDS = ["wsgi", *(["asgi"] if "asgi" in selected_classes() else [])]
needs_asgi = pytest.mark.skipif("asgi" not in KINDS,
                                reason="asgi is not in RELIABILITY_WORKER_CLASSES")


def serve(*args: str, kind: str = "wsgi", app: str = "fault_apps:app") -> list[str]:
    """``appserver serve`` for ``app`` (on ``-k asgi``, its ASGI twin)."""
    if kind == "asgi":
        args = ("-k", "asgi", *args)
        app = app_for("asgi", app)
    return [sys.executable, "-m", "appserver", "serve", "-w", "2", *args, app]


def label(fault: str, kind: str) -> str:
    return fault if kind == "wsgi" else f"{fault} (-k asgi)"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="re-", dir="/tmp"))  # short: unix socket paths
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def readonly(workdir: Path) -> Path:
    path = workdir / "readonly"
    path.mkdir()
    path.chmod(0o555)
    return path


def entries(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def check_failed_start(run: Run, workdir: Path, before: set[str], *messages: str,
                       extra_left: list[str] | None = None) -> str:
    """Assert a clean failed start; return what was left behind ("nothing" when nothing)."""
    assert run.status != 0, f"exit status 0\n{run.stderr}"
    assert run.seconds < QUICK, f"took {run.seconds:.1f}s to fail\n{run.stderr}"
    for message in messages:
        assert message in run.stderr, f"{message!r} not in:\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    assert "booted" not in run.stderr, f"workers were started\n{run.stderr}"
    created = sorted(entries(workdir) - before)
    left = [f"process {pid}" for pid in run.left] + created + (extra_left or [])
    assert not left, f"left behind: {left}\n{run.stderr}"
    return "nothing"


def error_line(run: Run, workdir: Path) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    text = next((line for line in lines
                 if re.search(r"cannot start|not found|cannot serve|startup failed", line)),
                lines[0] if lines else "")
    text = re.sub(r"^\[[^\]]*\] \[\d+\] \[\w+\] ", "", text)  # a log line's date/pid/level
    text = re.sub(r"\bworker \d+", "worker N", text)
    return text.replace(str(workdir), "$TMP")


def record(reliability: Recorder, fault: str, run: Run, workdir: Path, left: str) -> None:
    reliability.record("environment", fault=fault, **{
        "exit status": run.status, "error": error_line(run, workdir), "left behind": left})


# ---- appserver serve --------------------------------------------------------------------------


@needs_permissions
@pytest.mark.parametrize("option", ["--error-logfile", "--access-logfile", "--pid"])
def test_unwritable_path(workdir: Path, readonly: Path, reliability: Recorder,
                         option: str, kind: str) -> None:
    bad = readonly / "server.file"
    options = [option, str(bad)]
    if option != "--pid":
        options += ["--pid", str(workdir / "app.pid")]
    if option == "--access-logfile":  # the error log is fine: the check must not leave it behind
        options += ["--error-logfile", str(workdir / "error.log")]
    before = entries(workdir)
    run = run_command(serve("-b", f"unix:{workdir}/ok.sock", *options, kind=kind), workdir,
                      prefix=AS_PLAIN_USER)
    what = "cannot write the pid file" if option == "--pid" else "cannot open for writing"
    left = check_failed_start(run, workdir, before, "appserver: cannot start:",
                              f"{option} {bad}: {what}: Permission denied",
                              "or choose another path")
    what_file = {"--pid": "pid file", "--error-logfile": "error log",
            "--access-logfile": "access log"}[option]
    record(reliability, label(f"unwritable {what_file} path ({option})", kind), run, workdir,
           left)


def test_missing_socket_directory(workdir: Path, reliability: Recorder, kind: str) -> None:
    missing = workdir / "no-such-dir"
    before = entries(workdir)
    run = run_command(serve("-b", f"unix:{workdir}/ok.sock", "-b", f"unix:{missing}/app.sock",
                            "--pid", str(workdir / "app.pid"), kind=kind), workdir)
    left = check_failed_start(run, workdir, before, f"unix:{missing}/app.sock: directory "
                              f"{missing} does not exist", f"mkdir -p {missing}")
    record(reliability, label("missing socket directory (second of two binds)", kind), run,
           workdir, left)


def test_port_in_use(workdir: Path, reliability: Recorder, kind: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = entries(workdir)
        run = run_command(serve("-b", f"unix:{workdir}/ok.sock", "-b", f"127.0.0.1:{port}",
                                "--pid", str(workdir / "app.pid"), kind=kind), workdir)
        left = check_failed_start(run, workdir, before,
                                  f"127.0.0.1:{port}: address already in use",
                                  "or bind another port")
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the port's owner still listens
    run.stderr = run.stderr.replace(f":{port}", ":PORT")
    record(reliability, label("TCP port in use", kind), run, workdir, left)


def test_socket_path_of_a_live_server(workdir: Path, reliability: Recorder, kind: str) -> None:
    launcher = Launcher(workdir / "live")
    (workdir / "live").mkdir()
    try:
        live = launcher.start("-k", "sync", app="fault_apps:app", workers=1,
                              env={"PYTHONPATH": str(HERE)}, timeout=30)
        assert live.unix_path is not None
        inode = os.stat(live.unix_path).st_ino
        before = entries(workdir)
        run = run_command(serve("-b", f"unix:{workdir}/ok.sock", "-b", f"unix:{live.unix_path}",
                                "--pid", str(workdir / "app.pid"), kind=kind), workdir)
        harmed = []
        if os.stat(live.unix_path).st_ino != inode:
            harmed.append("the live server's socket file was replaced")
        if not live.accepts():
            harmed.append("the live server no longer answers")
        left = check_failed_start(run, workdir, before,
                                  f"a server is already listening on {live.unix_path}; "
                                  "refusing to steal it", "stop that server first",
                                  extra_left=harmed)
        assert live.proc.poll() is None
    finally:
        launcher.close()
    record(reliability, label("unix socket path of a live server", kind), run, workdir, left)


# ---- the ASGI interface's own start-up faults -------------------------------------------------


@needs_asgi
def test_asgi_lifespan_startup_failed(workdir: Path, reliability: Recorder) -> None:
    before = entries(workdir)
    run = run_command([sys.executable, "-m", "appserver", "serve", "-w", "2", "-k", "asgi",
                       "-b", f"unix:{workdir}/ok.sock", "--pid", str(workdir / "app.pid"),
                       "fault_apps:asgi_startup_fails"], workdir)
    assert run.status == 4, f"exit status {run.status}\n{run.stderr}"  # the app-load status
    left = check_failed_start(run, workdir, before, "ASGI lifespan startup failed: fault: the "
                              "database at db:5432 refused the connection",
                              "the app failed to load; stopping")
    # The master stops instead of respawning workers that fail the same way, in a loop.
    assert run.stderr.count("lifespan startup failed") <= 2, run.stderr
    record(reliability, "ASGI lifespan startup fails (-k asgi)", run, workdir, left)


WRONG_INTERFACE = {
    # case: (options, app, what the error must say)
    "WSGI app on -k asgi": (["-k", "asgi"], "fault_apps:app", "looks like a WSGI app"),
    "ASGI app on a WSGI class (-k gthread)": (["-k", "gthread"], "fault_apps:asgi_app",
                                              "is an ASGI app (an async callable): serve it "
                                              "with -k asgi"),
}


@needs_asgi
@pytest.mark.parametrize("case", list(WRONG_INTERFACE))
def test_app_of_the_wrong_interface(workdir: Path, reliability: Recorder, case: str) -> None:
    options, app, message = WRONG_INTERFACE[case]
    before = entries(workdir)
    run = run_command([sys.executable, "-m", "appserver", "serve", "-w", "2", *options,
                       "-b", f"unix:{workdir}/ok.sock", "--pid", str(workdir / "app.pid"), app],
                      workdir)
    assert run.status == 4, f"exit status {run.status}\n{run.stderr}"
    left = check_failed_start(run, workdir, before, message, "the app failed to load; stopping")
    record(reliability, case, run, workdir, left)


# ---- appserver up -----------------------------------------------------------------------------

# find_nginx() looks on PATH, then in /usr/sbin and friends (a plain user's PATH often lacks
# sbin), so a PATH without nginx is not enough on a machine that has it: the command runs with
# the sbin fallback finding nothing, as on a machine where nginx is not installed.
NO_NGINX = """
import shutil, sys
import appserver.bundle.tools as tools
tools.find_nginx = lambda: shutil.which("nginx")
from appserver.cli import main
sys.exit(main())
"""

SETTINGS = """
[app]
module = "fault_apps:app"
directory = "."

[nginx]
static_dir = ""
"""


def test_up_without_nginx(workdir: Path, reliability: Recorder) -> None:
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.access(os.path.join(d, "nginx"), os.X_OK))
    assert not shutil.which("nginx", path=path)
    project = workdir / "project"
    project.mkdir()
    shutil.copy(HERE / "fault_apps.py", project)
    (project / "settings.toml").write_text(SETTINGS)
    before = entries(workdir)
    run = run_command([sys.executable, "-c", NO_NGINX, "up", "--settings",
                       str(project / "settings.toml"), "--run-dir", str(workdir / "run"),
                       "--port", "1"], workdir, env={"PATH": path})
    left = check_failed_start(run, workdir, before, NGINX_INSTALL_HINT)
    assert not re.search(r"listening on|nginx pid", run.stdout + run.stderr)
    record(reliability, "`appserver up` with no nginx binary", run, workdir, left)
