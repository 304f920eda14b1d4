"""Master tests on a real master process: signals, respawn, timeouts, recycling, unix sockets.

Each test starts ``python -m appserver serve`` as a subprocess (see ``harness.py``), talks to it
over real sockets, and stops every process it started in a finalizer.  Short timeouts keep the
file fast: ``--timeout 2`` and ``--graceful-timeout 3`` unless a test needs otherwise.
"""

from __future__ import annotations

import grp
import http.client
import os
import shutil
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from .harness import (
    NEW_MASTER,
    Launcher,
    Load,
    Reply,
    Server,
    alive,
    request,
    signal_pid,
    token_pids,
    wait_for,
)

FAST = ["--timeout", "2", "--graceful-timeout", "3"]
WORKER_CLASSES = [
    pytest.param(["-k", "sync"], id="sync"),
    pytest.param(["-k", "gthread", "--threads", "4"], id="gthread"),
]
# The tests of what every class must do alike (heartbeat, graceful stop, reload, recycling) also
# run on the async classes.
ALL_CLASSES = WORKER_CLASSES + [
    pytest.param(["-k", "gevent"], id="gevent"),
    pytest.param(["-k", "eventlet"], id="eventlet"),
    pytest.param(["-k", "asyncio", "--threads", "4"], id="asyncio"),
    pytest.param(["-k", "tornado", "--threads", "4"], id="tornado"),
    pytest.param(["-k", "asgi"], id="asgi"),  # the ASGI path (apps:asgi_hello)
]
GREEN = {"gevent", "eventlet"}


@pytest.fixture(params=WORKER_CLASSES)
def kind(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


@pytest.fixture(params=ALL_CLASSES)
def any_kind(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


def threads_of(kind: list[str]) -> int:
    return int(kind[kind.index("--threads") + 1]) if "--threads" in kind else 1


def background_get(server: Server, path: str, timeout: float = 15.0) -> tuple[threading.Thread,
                                                                            dict[str, object]]:
    """GET ``path`` in a thread; the dict gets "reply" or "error"."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["reply"] = server.get(path, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def assert_no_failures(result: object, minimum: int) -> None:
    ok, failures = result.ok, result.failures  # type: ignore[attr-defined]
    assert not failures, f"{len(failures)} failed requests (of {ok + len(failures)}): {failures[:5]}"
    assert ok >= minimum, f"only {ok} requests completed"


# ============================================================================================
# Signals


def test_term_is_a_graceful_stop(launcher: Launcher, workdir: Path, any_kind: list[str]) -> None:
    pidfile = workdir / "app.pid"
    server = launcher.start(*any_kind, *FAST, "--pid", str(pidfile), bind="both")
    assert pidfile.read_text().strip() == str(server.pid)
    workers = server.workers()
    mark = workdir / "inside"
    thread, outcome = background_get(server, f"/slow?t=1.5&mark={mark}")
    wait_for(mark.exists, 5, "the slow request to reach the app", details=server.tail)

    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    thread.join(10)
    reply = outcome.get("reply")
    assert isinstance(reply, Reply) and reply.status == 200, outcome
    assert reply.pid in workers
    assert server.unix_path is not None and not os.path.exists(server.unix_path)
    assert not pidfile.exists()
    server.wait_gone(5)
    log = server.log()
    assert "master received SIGTERM" in log
    assert "timed out" not in log and "killed" not in log


def test_term_ends_what_outlives_the_graceful_timeout(launcher: Launcher, workdir: Path,
                                                      kind: list[str]) -> None:
    server = launcher.start(*kind, "--timeout", "30", "--graceful-timeout", "1", workers=1)
    [worker] = server.workers()
    mark = workdir / "inside"
    thread, outcome = background_get(server, f"/slow?t=20&mark={mark}")
    wait_for(mark.exists, 5, "the slow request to reach the app", details=server.tail)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - started < 6
    thread.join(5)
    assert "error" in outcome
    server.wait_gone(5)
    log = server.log()
    # sync: the master kills it; gthread: the worker gives up on its stuck threads itself, or the
    # master kills it, whichever comes first.  Either way the log says so, and never "timed out".
    assert (f"worker {worker} did not stop within the graceful timeout and was killed by the "
            "master with SIGKILL" in log) or ("requests still running after the graceful timeout"
                                              in log and "sync" not in kind), server.tail()
    assert "timed out" not in log and "not by the master" not in log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_int_and_quit_stop_quickly(launcher: Launcher, workdir: Path, kind: list[str],
                                   sig: signal.Signals) -> None:
    pidfile = workdir / "app.pid"
    server = launcher.start(*kind, "--timeout", "30", "--graceful-timeout", "30",
                            "--pid", str(pidfile))
    mark = workdir / "inside"
    thread, outcome = background_get(server, f"/slow?t=20&mark={mark}")
    wait_for(mark.exists, 5, "the slow request to reach the app", details=server.tail)
    started = time.monotonic()
    server.signal(sig)
    assert server.wait_exit(8) == 0
    assert time.monotonic() - started < 5, "a quick stop waited for the in-flight request"
    thread.join(5)
    assert "error" in outcome, f"the 20 s request was not cut off: {outcome}"
    assert server.unix_path is not None and not os.path.exists(server.unix_path)
    assert not pidfile.exists()
    server.wait_gone(5)
    assert f"master received {sig.name}" in server.log()


def write_module(directory: Path, name: str, text: str) -> None:
    path = directory / f"{name}.py"
    path.write_text(text)
    # A rewrite within the same second must not be served from a stale .pyc.
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)


VERSIONED = """
import os
VERSION = {version}
def app(environ, start_response):
    body = f"pid={{os.getpid()}} version={{VERSION}}\\n".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def version_of(reply: Reply) -> int:
    assert reply.status == 200, reply
    return int(reply.body.split(b"version=")[1])


def test_hup_reloads_settings_and_code(launcher: Launcher, workdir: Path, kind: list[str]) -> None:
    code = workdir / "code"
    code.mkdir()
    write_module(code, "versioned", VERSIONED.format(version=1))
    settings = workdir / "settings.toml"
    settings.write_text("[server]\nworkers = 2\n")
    server = launcher.start(*kind, *FAST, "--settings", str(settings), "--pythonpath", str(code),
                            app="versioned:app", workers=None, expect=2)
    old = server.workers()
    assert version_of(server.get()) == 1

    settings.write_text("[server]\nworkers = 3\n")
    write_module(code, "versioned", VERSIONED.format(version=2))
    server.signal(signal.SIGHUP)
    new = server.wait_workers(3, exclude=old)
    server.wait_log(r"reloaded: generation 2 serves")
    assert not any(alive(pid) for pid in old)
    for _ in range(6):
        reply = server.get()
        assert version_of(reply) == 2 and reply.pid in new


BROKEN = "raise RuntimeError('this module is broken on purpose')\n"


def test_hup_with_broken_code_keeps_the_old_workers(launcher: Launcher, workdir: Path,
                                                    kind: list[str]) -> None:
    code = workdir / "code"
    code.mkdir()
    write_module(code, "versioned", VERSIONED.format(version=1))
    server = launcher.start(*kind, *FAST, "--pythonpath", str(code), app="versioned:app")
    old = server.workers()

    write_module(code, "versioned", BROKEN)
    server.signal(signal.SIGHUP)
    server.wait_log(r"reload abandoned \(the new workers failed to load the app\); "
                    r"the old workers keep serving")
    log = server.log()
    assert "this module is broken on purpose" in log  # the traceback is in the log
    time.sleep(1.5)  # the abandoned generation's other workers exit meanwhile
    assert server.proc.poll() is None, f"the master stopped\n{server.tail()}"
    assert server.workers() == old
    for _ in range(6):
        reply = server.get()
        assert version_of(reply) == 1 and reply.pid in old

    # Once the code is fixed, the next HUP reloads normally.
    write_module(code, "versioned", VERSIONED.format(version=3))
    server.signal(signal.SIGHUP)
    new = server.wait_workers(2, exclude=old)
    server.wait_log(r"reloaded: generation \d+ serves")
    reply = server.get()
    assert version_of(reply) == 3 and reply.pid in new


def test_hup_with_bad_settings_keeps_the_old_settings(launcher: Launcher, workdir: Path) -> None:
    settings = workdir / "settings.toml"
    settings.write_text("[server]\nworkers = 2\n")
    server = launcher.start(*FAST, "--settings", str(settings), workers=None, expect=2)
    old = server.workers()
    settings.write_text("[server]\nworkerz = 3\n")
    server.signal(signal.SIGHUP)
    server.wait_log(r"reload refused, the old settings stay in force: .*unknown setting 'workerz'")
    assert server.workers() == old
    assert server.get().status == 200


def test_ttin_and_ttou_add_and_remove_workers(launcher: Launcher, kind: list[str]) -> None:
    server = launcher.start(*kind, *FAST, workers=2)
    first = server.workers()
    server.signal(signal.SIGTTIN)
    three = server.wait_workers(3)
    assert set(first) < set(three)
    server.signal(signal.SIGTTIN)
    server.wait_workers(4)
    for count in (3, 2, 1):
        server.signal(signal.SIGTTOU)
        server.wait_workers(count)
    server.signal(signal.SIGTTOU)  # never below one worker
    time.sleep(1.0)
    assert len(server.wait_workers(1)) == 1
    assert server.get().status == 200
    assert "killed" not in server.log()


def test_usr1_reopens_the_log_files(launcher: Launcher, workdir: Path, kind: list[str]) -> None:
    access = workdir / "access.log"
    errors = workdir / "error.log"
    server = launcher.start(*kind, *FAST, "--access-logfile", str(access), errorlog=errors)
    for _ in range(3):
        assert server.get("/before").status == 200
    wait_for(lambda: access.exists() and access.read_text().count("/before") == 3, 5,
             "three access log lines")
    access.rename(workdir / "access.log.1")
    errors.rename(workdir / "error.log.1")
    server.extra_logs.append(workdir / "error.log.1")

    server.signal(signal.SIGUSR1)
    server.wait_log(r"worker \d+ reopened its log files", count=2)
    for _ in range(4):
        assert server.get("/after").status == 200
    wait_for(lambda: access.exists() and access.read_text().count("/after") == 4, 5,
             "four lines in the new access log")
    old_access = (workdir / "access.log.1").read_text()
    assert "/after" not in old_access and old_access.count("/before") == 3
    assert "reopened its log files" in errors.read_text()
    # The master writes to the new error log too.
    server.signal(signal.SIGTTIN)
    wait_for(lambda: "workers: 3" in errors.read_text(), 5, "the master's line in the new log")


def test_usr2_upgrade_winch_term_under_load(launcher: Launcher, workdir: Path,
                                            kind: list[str]) -> None:
    pidfile = workdir / "app.pid"
    server = launcher.start(*kind, *FAST, "--pid", str(pidfile), bind="both")
    old_workers = server.workers()
    with Load(server, threads=4, limit=6000, pause=0.005) as load:
        load.wait_done(50)
        server.signal(signal.SIGUSR2)
        match = server.wait_log(NEW_MASTER.pattern)[0]
        new_master = int(match.group(1))
        new_workers = server.wait_workers(2, master=new_master)
        assert (workdir / "app.pid.oldbin").read_text().strip() == str(server.pid)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_master), 5,
                 "the new master's pid in the pid file")
        load.wait_done(50)

        server.signal(signal.SIGWINCH)
        wait_for(lambda: not server.workers(), 10, "the old workers to retire", details=server.tail)
        load.wait_done(50)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(10) == 0
        load.wait_done(100)
        result = load.stop()
    assert_no_failures(result, 250)
    assert result.pids & set(new_workers), "the new master's workers served nothing"
    assert not any(alive(pid) for pid in old_workers)
    assert alive(new_master)
    assert pidfile.read_text().strip() == str(new_master)
    assert not (workdir / "app.pid.oldbin").exists()
    assert server.unix_path is not None and os.path.exists(server.unix_path)
    assert server.get().pid in new_workers
    tcp = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        assert request(tcp).pid in new_workers  # the inherited TCP socket, same port
    finally:
        tcp.close()

    # The new master is a complete server: TERM stops it and cleans up after it.
    signal_pid(new_master, signal.SIGTERM)
    wait_for(lambda: not alive(new_master), 10, "the new master to exit", details=server.tail)
    server.wait_gone(5)
    assert not os.path.exists(server.unix_path)
    assert not pidfile.exists()


def test_usr2_whose_new_master_fails_leaves_the_old_one_serving(launcher: Launcher,
                                                                 workdir: Path) -> None:
    code = workdir / "code"
    code.mkdir()
    write_module(code, "versioned", VERSIONED.format(version=1))
    pidfile = workdir / "app.pid"
    server = launcher.start(*FAST, "--pythonpath", str(code), "--pid", str(pidfile),
                            app="versioned:app")
    workers = server.workers()
    write_module(code, "versioned", BROKEN)
    server.signal(signal.SIGUSR2)
    new_master = int(server.wait_log(NEW_MASTER.pattern)[0].group(1))
    server.wait_log(rf"the new master {new_master} exited \(status \d+\); this master carries on")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(server.pid), 5,
             "the old master's pid back in the pid file")
    assert not (workdir / "app.pid.oldbin").exists()
    assert server.workers() == workers
    assert version_of(server.get()) == 1
    # WINCH without a new master is ignored (it may come from a terminal resize).
    server.signal(signal.SIGWINCH)
    server.wait_log(r"SIGWINCH ignored: no new master is running")
    time.sleep(0.5)
    assert server.workers() == workers
    assert server.unix_path is not None and os.path.exists(server.unix_path)


def test_hup_rebinds_changed_addresses(launcher: Launcher, workdir: Path) -> None:
    first, second = workdir / "a.sock", workdir / "b.sock"
    settings = workdir / "settings.toml"
    settings.write_text(f'[server]\nbind = ["unix:{first}"]\nworkers = 2\n')
    server = launcher.start(*FAST, "--settings", str(settings), bind="none", workers=None,
                            expect=2, unix_path=str(first))
    old = server.workers()
    settings.write_text(f'[server]\nbind = ["unix:{second}"]\nworkers = 2\n')
    server.signal(signal.SIGHUP)
    new = server.wait_workers(2, exclude=old)
    server.wait_log(r"reloaded: generation 2 serves")
    wait_for(lambda: not first.exists(), 5, "the old socket file to go", details=server.tail)
    server.unix_path = str(second)
    assert server.get().pid in new


# ============================================================================================
# Worker deaths


def test_workers_exit_when_the_master_is_killed(launcher: Launcher, kind: list[str]) -> None:
    server = launcher.start(*kind, *FAST, workers=2)
    workers = server.workers()
    os.kill(server.pid, signal.SIGKILL)
    server.wait_exit(5)
    wait_for(lambda: not any(alive(pid) for pid in workers), 8,
             "the orphaned workers to stop by themselves")
    assert "the master (pid" in server.log() and "is gone; stopping" in server.log()


def test_worker_killed_by_someone_else_is_respawned(launcher: Launcher, any_kind: list[str]) -> None:
    server = launcher.start(*any_kind, *FAST, workers=2)
    victim, survivor = server.workers()
    os.kill(victim, signal.SIGKILL)
    server.wait_log(rf"worker {victim} was killed by SIGKILL, not by the master")
    now = server.wait_workers(2, exclude=[victim])
    assert survivor in now
    assert server.get().status == 200
    log = server.log()
    assert "timed out" not in log


def test_hung_worker_is_killed_by_the_timeout(launcher: Launcher, any_kind: list[str]) -> None:
    server = launcher.start(*any_kind, *FAST, workers=1)
    [hung] = server.workers()
    # A gthread or asyncio worker is stuck only once every thread is stuck; a green worker once
    # its hub is blocked (sleep is cooperative there, so that needs a busy loop).
    green = any_kind[1] in GREEN
    path = "/spin" if green else "/hang"
    hangs = [background_get(server, path, timeout=20) for _ in range(1 if green else threads_of(any_kind))]
    server.wait_log(rf"worker {hung} timed out \(no heartbeat for more than 2s, --timeout\) "
                    r"and was killed by the master with SIG(ABRT|KILL)", timeout=12)
    log = server.log()
    assert f"worker {hung} has been silent" in log
    assert "most recent call first" in log and "apps.py" in log  # faulthandler's stack dump
    assert "not by the master" not in log
    [fresh] = server.wait_workers(1, exclude=[hung])
    assert server.get().pid == fresh
    for thread, outcome in hangs:
        thread.join(5)
        assert "error" in outcome  # the hung requests' connections were cut


# ============================================================================================
# Zero failed requests under load


def test_hup_under_load_fails_no_request(launcher: Launcher, any_kind: list[str]) -> None:
    server = launcher.start(*any_kind, *FAST, workers=2)
    with Load(server, threads=4, limit=6000, pause=0.005) as load:
        load.wait_done(50)
        for generation in (2, 3):
            before = server.workers()
            server.signal(signal.SIGHUP)
            server.wait_log(rf"reloaded: generation {generation} serves")
            server.wait_workers(2, exclude=before)
            wait_for(lambda before=before: not any(alive(p) for p in before), 10,
                     "the old workers to exit", details=server.tail)
            load.wait_done(50)
        result = load.stop()
    assert_no_failures(result, 150)
    assert "killed" not in server.log()


def test_max_requests_recycles_without_failures(launcher: Launcher, any_kind: list[str]) -> None:
    server = launcher.start(*any_kind, *FAST, "--max-requests", "40", "--max-requests-jitter", "10",
                            workers=2)
    first = server.workers()
    with Load(server, threads=4, limit=400) as load:
        result = load.finish()
    assert_no_failures(result, 400)
    server.wait_log(r"worker \d+ retired: served \d+ requests \(--max-requests \d+\)", count=3)
    server.wait_workers(2, exclude=first)
    assert "killed" not in server.log()


def test_memory_limit_recycles_without_failures(launcher: Launcher, any_kind: list[str]) -> None:
    server = launcher.start(*any_kind, *FAST, "--max-worker-memory", "64M", workers=2)
    first = server.workers()
    with Load(server, threads=2, limit=300, path="/alloc?mib=2", pause=0.01) as load:
        result = load.finish()
    assert_no_failures(result, 300)
    server.wait_log(r"worker \d+ retired: resident memory [\d.]+ MiB above --max-worker-memory 64 MiB",
                    count=2)
    server.wait_workers(2, exclude=first)
    assert "killed" not in server.log()


# ============================================================================================
# Unix sockets


@pytest.mark.parametrize("mode", [0o660, 0o666])
def test_unix_socket_mode(launcher: Launcher, mode: int) -> None:
    server = launcher.start("--socket-mode", f"{mode:04o}", *FAST)
    assert server.unix_path is not None
    st = os.stat(server.unix_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == mode


def test_unix_socket_group(launcher: Launcher) -> None:
    group = grp.getgrnam("daemon")
    server = launcher.start("--socket-group", "daemon", *FAST)
    assert server.unix_path is not None
    st = os.stat(server.unix_path)
    assert st.st_gid == group.gr_gid
    assert stat.S_IMODE(st.st_mode) == 0o660  # the default mode: the group may write


def test_unix_socket_unknown_group_is_refused(launcher: Launcher) -> None:
    server = launcher.start("--socket-group", "no-such-group-xyz", *FAST, wait=False)
    assert server.wait_exit(10) != 0
    assert "--socket-group 'no-such-group-xyz': no such group" in server.log()
    assert server.unix_path is not None and not os.path.exists(server.unix_path)
    server.wait_gone(5)


def test_stale_unix_socket_is_replaced(launcher: Launcher, workdir: Path) -> None:
    path = str(workdir / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening, then closed: what a crashed run leaves
    stale.close()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(path)
    probe.close()
    server = launcher.start(*FAST, unix_path=path)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert server.get().status == 200
    assert "listening on unix:" + path in server.log()


def test_live_unix_socket_is_not_stolen(launcher: Launcher, workdir: Path) -> None:
    path = str(workdir / "live.sock")
    first = launcher.start(*FAST, unix_path=path)
    inode = os.stat(path).st_ino
    workers = first.workers()
    second = launcher.start(*FAST, unix_path=path, wait=False)
    assert second.wait_exit(10) != 0
    assert "a server is already listening" in second.log()
    assert "refusing to steal it" in second.log()
    second.wait_gone(5)
    assert os.stat(path).st_ino == inode
    assert first.get().pid in workers
    assert first.workers() == workers


def test_regular_file_at_the_socket_path_is_refused(launcher: Launcher, workdir: Path) -> None:
    path = workdir / "precious.txt"
    path.write_text("do not delete\n")
    server = launcher.start(*FAST, unix_path=str(path), wait=False)
    assert server.wait_exit(10) != 0
    assert "exists and is not a socket; refusing to replace it" in server.log()
    assert path.read_text() == "do not delete\n"
    server.wait_gone(5)


# ============================================================================================
# Start-up errors: a clear message, a non-zero exit, nothing left running


def assert_failed_start(server: Server, message: str, code: int | None = None) -> None:
    status = server.wait_exit(15)
    assert status != 0
    if code is not None:
        assert status == code, f"exit status {status}, wanted {code}\n{server.tail()}"
    assert message in server.log(), server.tail()
    server.wait_gone(5)
    assert not (server.workdir / "app.pid").exists()


def test_port_in_use(launcher: Launcher, workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = launcher.start("-b", f"127.0.0.1:{port}", "--pid", "app.pid", bind="none",
                                wait=False)
        assert_failed_start(server, f"127.0.0.1:{port}: address already in use")
        taken.settimeout(0.1)


def test_missing_socket_directory(launcher: Launcher, workdir: Path) -> None:
    path = workdir / "missing" / "app.sock"
    server = launcher.start("--pid", "app.pid", unix_path=str(path), wait=False)
    assert_failed_start(server, f"directory {workdir / 'missing'} does not exist")


@pytest.mark.parametrize("preload", [False, True], ids=["workers", "preload"])
def test_unimportable_app(launcher: Launcher, preload: bool) -> None:
    options = ["--preload"] if preload else []
    server = launcher.start(*options, "--pid", "app.pid", app="no_such_module:app", wait=False)
    assert_failed_start(server, "no module named 'no_such_module'", code=4)


def test_app_that_raises_on_import(launcher: Launcher, workdir: Path) -> None:
    code = workdir / "code"
    code.mkdir()
    write_module(code, "versioned", BROKEN)
    server = launcher.start("--pythonpath", str(code), "--pid", "app.pid", app="versioned:app",
                            wait=False)
    assert_failed_start(server, "this module is broken on purpose", code=4)
    assert "the app failed to load" in server.log()


@pytest.mark.parametrize("option", ["--error-logfile", "--access-logfile"])
def test_unwritable_log_path(launcher: Launcher, workdir: Path, option: str) -> None:
    bad = str(workdir / "no-such-dir" / "x.log")
    server = launcher.start(option, bad, "--pid", "app.pid", wait=False)
    assert_failed_start(server, f"{option} {bad}: cannot open for writing")
    assert server.unix_path is not None and not os.path.exists(server.unix_path)


def test_log_path_that_is_a_directory(launcher: Launcher, workdir: Path) -> None:
    server = launcher.start("--access-logfile", str(workdir), "--pid", "app.pid", wait=False)
    assert_failed_start(server, f"--access-logfile {workdir}: cannot open for writing")


def test_nothing_is_left_after_the_finalizer(workdir: Path) -> None:
    """The harness itself: a master killed with SIGKILL leaves workers; the finalizer ends them."""
    launcher = Launcher(workdir)
    server = launcher.start(*FAST, workers=2)
    workers = server.workers()
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    launcher.close()
    assert not token_pids(server.token)
    assert not any(alive(pid) for pid in workers)


def test_request_helper_sanity(launcher: Launcher) -> None:
    server = launcher.start(*FAST, bind="tcp", workers=1)
    conn = server.connection()
    try:
        reply = request(conn, "/", method="POST", body=b"abc")
    finally:
        conn.close()
    assert reply.status == 200 and reply.body.endswith(b"body=3\n")
