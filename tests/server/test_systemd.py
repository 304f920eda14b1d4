"""The server under systemd, without systemd: socket activation and the sd_notify protocol.

* ``systemd-socket-activate`` (Debian's systemd package) listens on a unix socket and, on the first
  connection, execs the server with the socket as LISTEN_FDS; gunicorn 27 runs the same way as the
  reference (it takes the socket, ignores ``--bind`` and sends READY=1).
* A test-owned NOTIFY_SOCKET (tests/server/sdhelpers.py) records what the master sends: READY=1
  once a worker serves, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a HUP, STOPPING=1,
  WATCHDOG=1 every half WATCHDOG_USEC, and MAINPID= when a USR2 upgrade hands the service over.
* The test holds the listening socket as a .socket unit does and restarts the server behind it
  under load: no request fails, because the kernel queues connections on the held socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appserver._build import PURE_ENV

from .harness import (
    HERE,
    TOKEN_VAR,
    UnixHTTPConnection,
    alive,
    children,
    free_port,
    listening,
    request,
    signal_pid,
    token_pids,
    wait_for,
)
from .sdhelpers import NotifyListener, activate_argv, held_unix_socket

SERVE = [sys.executable, "-m", "appserver", "serve", "--no-control-socket"]
GUNICORN = [sys.executable, "-m", "gunicorn", "--no-control-socket"]


def socket_activate() -> str:
    found = shutil.which("systemd-socket-activate")
    if found is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    return found


@dataclass
class Run:
    """Processes one test started (each with its token), stopped by the fixture."""

    workdir: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def errorlog(self) -> Path:
        return self.workdir / "error.log"

    def log(self) -> str:
        parts = []
        for name in ("error.log", "stderr.log"):
            try:
                parts.append((self.workdir / name).read_text(errors="replace"))
            except OSError:
                pass
        return "".join(parts)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("APPSERVER_", "LISTEN_", "WATCHDOG_", "NOTIFY_"))
                   or k == PURE_ENV}
        environ.update({TOKEN_VAR: self.token, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"})
        environ.update(extra or {})
        return environ

    def start(self, argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()
              ) -> subprocess.Popen[bytes]:
        with open(self.workdir / "stderr.log", "ab") as err:
            proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdout=err, stderr=err,
                                    stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                signal_pid(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and token_pids(self.token):
            for pid in token_pids(self.token):
                signal_pid(pid, signal.SIGKILL)
            time.sleep(0.05)


@pytest.fixture
def run(workdir: Path) -> Iterator[Run]:
    r = Run(workdir)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def notify(workdir: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(workdir / "notify")
    try:
        yield listener
    finally:
        listener.close()


def get(path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path, timeout=timeout)
    try:
        reply = request(conn)
        return reply.status, reply.body
    finally:
        conn.close()


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = fh.read().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in items if item)


def is_ready(m: dict[str, str]) -> bool:
    return m.get("READY") == "1"


# ---- socket activation: ours and gunicorn's ---------------------------------------------------


def activated(run: Run, notify: NotifyListener, command: list[str]) -> tuple[
        subprocess.Popen[bytes], str]:
    """``systemd-socket-activate -l PATH -E ... COMMAND``; the first request starts COMMAND."""
    path = str(run.workdir / "app.sock")
    env = run.env()
    argv = [socket_activate(), "-l", path, "--fdname=appserver.socket"]
    for key in (TOKEN_VAR, "PYTHONPATH", "PYTHONUNBUFFERED", PURE_ENV):
        if key in env:
            argv += ["-E", f"{key}={env[key]}"]
    argv += ["-E", f"NOTIFY_SOCKET={notify.address}", *command]
    proc = run.start(argv, env)
    wait_for(lambda: os.path.exists(path), 10, "systemd-socket-activate to listen",
             details=run.log)
    return proc, path


@pytest.mark.parametrize("server", ["appserver", "gunicorn"])
def test_systemd_socket_activate_passes_the_socket(run: Run, notify: NotifyListener,
                                                   server: str) -> None:
    port = free_port()  # named by --bind, and not used: the inherited socket is the bind
    # --graceful-timeout bounds the stop below: gunicorn's default (30 s) once outlasted its wait
    # in CI, a worker not yet stopped.
    common = ["-w", "2", "-b", f"127.0.0.1:{port}", "--error-logfile", str(run.errorlog),
              "--graceful-timeout", "5", "sdapps:process_env"]
    proc, path = activated(run, notify, (SERVE if server == "appserver" else GUNICORN) + common)
    # The first connection makes systemd-socket-activate exec the server (same pid); the
    # request waits in the socket's queue until a worker accepts it.
    status, body = get(path, timeout=30)
    assert status == 200, body
    seen_by_app = set(json.loads(body))
    notify.wait(is_ready, "READY=1")
    assert proc.poll() is None and not listening(port), "--bind was used besides the socket"
    # The master took the variables: its children never take the sockets again.
    assert not seen_by_app & {"LISTEN_FDS", "LISTEN_PID"}, seen_by_app
    if server == "appserver":
        log = run.log()
        assert f"socket activation: listening on unix:{path} (descriptor 3, " \
               f"appserver.socket)" in log, log
        assert f"bind = ['127.0.0.1:{port}'] is not used" in log
        # Only the master notifies (NotifyAccess=main); gunicorn leaves NOTIFY_SOCKET to the app.
        assert "NOTIFY_SOCKET" not in seen_by_app and "LISTEN_FDNAMES" not in seen_by_app
    signal_pid(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0, run.log()
    # The socket file is the activator's (a .socket unit's): the server leaves it in place.
    assert os.path.exists(path)
    if server == "appserver":
        assert any(m.get("STOPPING") == "1" for m in notify.snapshot())


def test_listen_fds_for_another_process_are_not_taken(run: Run, workdir: Path) -> None:
    """LISTEN_PID names someone else (a parent's variables leaked): bind as configured."""
    path = str(workdir / "own.sock")
    proc = run.start([*SERVE, "-w", "1", "-b", f"unix:{path}", "--error-logfile",
                      str(run.errorlog), "apps:hello"],
                     run.env({"LISTEN_FDS": "1", "LISTEN_PID": "1"}))
    wait_for(lambda: os.path.exists(path) and "booted" in run.log(), 20, "the server",
             details=run.log)
    assert get(path)[0] == 200
    assert "LISTEN_PID=1 is not this process" in run.log()
    signal_pid(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0


# ---- sd_notify --------------------------------------------------------------------------------


def start_held(run: Run, held: socket.socket, extra: list[str], env: dict[str, str]
               ) -> subprocess.Popen[bytes]:
    """The server with ``held`` as its socket-activated descriptor 3."""
    argv = activate_argv(held.fileno(), [*SERVE, "--error-logfile", str(run.errorlog), *extra,
                                         "apps:hello"])
    return run.start(argv, run.env(env), pass_fds=(held.fileno(),))


def test_notify_messages_in_order(run: Run, workdir: Path) -> None:
    notify = NotifyListener(abstract=f"appserver-test-{run.token}")  # an @abstract address
    try:
        path = str(workdir / "app.sock")
        held = held_unix_socket(path)
        proc = start_held(run, held, ["-w", "2"], {"NOTIFY_SOCKET": notify.address})
        ready = notify.wait(is_ready, "READY=1", timeout=30)
        assert notify.snapshot()[ready]["STATUS"].startswith("serving ")
        assert "booted" in run.log()  # READY=1 comes after a worker booted
        assert get(path)[0] == 200
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        signal_pid(proc.pid, signal.SIGHUP)
        reloading = notify.wait(lambda m: m.get("RELOADING") == "1", "RELOADING=1", after=ready)
        message = notify.snapshot()[reloading]
        # systemd (>= 253) matches the reload by this timestamp of CLOCK_MONOTONIC.
        assert before <= int(message["MONOTONIC_USEC"]) <= before + 10_000_000, message
        reloaded = notify.wait(is_ready, "READY=1 after the reload", after=reloading)
        assert "reloaded: generation 2 serves" in run.log()
        wait_for(lambda: any(m.get("STATUS") == "serving 2 workers"
                             for m in notify.snapshot()[reloaded:]), 10, "STATUS=serving 2")
        signal_pid(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        stopping = notify.wait(lambda m: m.get("STOPPING") == "1", "STOPPING=1", after=reloaded)
        assert ready < reloading < reloaded < stopping
        assert notify.snapshot()[stopping]["STATUS"] == "stopping"
        held.close()
    finally:
        notify.close()


def test_a_refused_reload_still_ends_in_ready(run: Run, notify: NotifyListener,
                                              workdir: Path) -> None:
    """A bad settings file on HUP: the old workers serve on, and systemd must not stay in
    "reloading": READY=1 follows, its STATUS says why."""
    config = workdir / "server.toml"
    config.write_text("[server]\nworkers = 1\n")
    held = held_unix_socket(str(workdir / "app.sock"))
    proc = start_held(run, held, ["-c", str(config)], {"NOTIFY_SOCKET": notify.address})
    ready = notify.wait(is_ready, "READY=1", timeout=30)
    config.write_text("[server]\nworkers = 'many'\n")
    signal_pid(proc.pid, signal.SIGHUP)
    reloading = notify.wait(lambda m: m.get("RELOADING") == "1", "RELOADING=1", after=ready)
    again = notify.wait(is_ready, "READY=1", after=reloading)
    assert notify.snapshot()[again]["STATUS"].startswith("reload refused: "), notify.snapshot()
    signal_pid(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    held.close()


def test_watchdog_is_fed_every_half_interval(run: Run, notify: NotifyListener,
                                             workdir: Path) -> None:
    held = held_unix_socket(str(workdir / "app.sock"))
    proc = start_held(run, held, ["-w", "1"], {"NOTIFY_SOCKET": notify.address,
                                               "WATCHDOG_USEC": "1000000"})
    notify.wait(is_ready, "READY=1", timeout=30)
    start = time.monotonic()
    time.sleep(4.0)
    pings = [t for t in notify.times("WATCHDOG") if t >= start]
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    # Every 0.5 s: about 8 in 4 s, and never a gap near the 1 s that would get it killed.
    assert 6 <= len(pings) <= 10, pings
    assert max(gaps) < 0.9, gaps
    signal_pid(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    held.close()


def test_watchdog_for_another_process_is_not_fed(run: Run, notify: NotifyListener,
                                                 workdir: Path) -> None:
    held = held_unix_socket(str(workdir / "app.sock"))
    proc = start_held(run, held, ["-w", "1"], {"NOTIFY_SOCKET": notify.address,
                                               "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    notify.wait(is_ready, "READY=1", timeout=30)
    time.sleep(1.5)
    assert not notify.times("WATCHDOG")
    assert "WATCHDOG_PID=1 is not this master" in run.log()
    signal_pid(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    held.close()


def test_usr2_hands_the_service_to_the_new_master(run: Run, notify: NotifyListener,
                                                  workdir: Path) -> None:
    """USR2 under socket activation: the new master takes the same descriptors (LISTEN_FDS with
    its own pid) and, when the old master leaves, the old one sends MAINPID=<new master>."""
    path = str(workdir / "app.sock")
    held = held_unix_socket(path)
    old = start_held(run, held, ["-w", "1"], {"NOTIFY_SOCKET": notify.address,
                                              "WATCHDOG_USEC": "4000000"})
    notify.wait(is_ready, "READY=1", timeout=30)
    signal_pid(old.pid, signal.SIGUSR2)
    new_pid = wait_for(lambda: [p for p in children(old.pid)
                                if "appserver" in Path(f"/proc/{p}/cmdline").read_bytes().decode(
                                    errors="replace") and children(p)], 30,
                       "the new master and its worker", details=run.log)[0]
    # What the old master exec'd the new one with: the notify socket, and the sockets and the
    # watchdog addressed to the new master's pid.
    new_env = environ_of(new_pid)
    assert new_env["NOTIFY_SOCKET"] == notify.address
    assert new_env["LISTEN_FDS"] == "1" and new_env["LISTEN_PID"] == str(new_pid)
    assert new_env["WATCHDOG_PID"] == str(new_pid)
    wait_for(lambda: run.log().count("socket activation: listening on") >= 2, 20,
             "the new master to inherit the socket", details=run.log)
    signal_pid(old.pid, signal.SIGWINCH)
    time.sleep(1.0)
    signal_pid(old.pid, signal.SIGTERM)
    assert old.wait(30) == 0
    handover = notify.wait(lambda m: "MAINPID" in m, "MAINPID=")
    assert notify.snapshot()[handover]["MAINPID"] == str(new_pid)
    assert not any(m.get("STOPPING") for m in notify.snapshot())  # the service goes on
    assert get(path)[0] == 200  # the new master serves on the same socket
    # The watchdog moved with it (WATCHDOG_PID names the new master).
    since = time.monotonic()
    wait_for(lambda: [t for t in notify.times("WATCHDOG") if t > since], 5,
             "a WATCHDOG=1 from the new master")
    signal_pid(new_pid, signal.SIGTERM)
    wait_for(lambda: not alive(new_pid), 30, "the new master to stop")
    assert any(m.get("STOPPING") == "1" for m in notify.snapshot()[handover:])
    held.close()


# ---- a restart behind the held socket -----------------------------------------------------------


class NewConnectionLoad:
    """Clients that open a new connection per request (GET /) until stopped; every refused,
    reset or timed-out connection, and every non-200 answer, is a failure."""

    def __init__(self, path: str, threads: int = 4, limit: int = 20000) -> None:
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self.limit = limit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.ok + len(self.failures) >= self.limit:
                    return
            try:
                status, body = get(self.path, timeout=20)
                if status != 200:
                    raise AssertionError(f"status {status}")
                with self._lock:
                    self.ok += 1
                    self.pids.add(int(body.split(b"=")[1].split()[0]))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                with self._lock:
                    self.failures.append(repr(exc))

    def done(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self._threads)


def test_restart_behind_the_held_socket_fails_no_request(run: Run, notify: NotifyListener,
                                                         workdir: Path) -> None:
    path = str(workdir / "app.sock")
    held = held_unix_socket(path)
    env = {"NOTIFY_SOCKET": notify.address}
    first = start_held(run, held, ["-w", "2"], env)
    notify.wait(is_ready, "READY=1 of the first server", timeout=30)
    load = NewConnectionLoad(path)
    try:
        wait_for(lambda: load.done() >= 200, 30, "load on the first server")
        signal_pid(first.pid, signal.SIGTERM)  # systemctl restart: a graceful stop first
        assert first.wait(30) == 0
        stopped_at = load.done()
        mark = len(notify.snapshot())
        second = start_held(run, held, ["-w", "2"], env)
        notify.wait(is_ready, "READY=1 of the second server", timeout=30, after=mark)
        wait_for(lambda: load.done() >= stopped_at + 300, 30, "load on the second server")
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    first_pids = {p for p in load.pids if p not in children(second.pid)}
    assert first_pids and load.pids - first_pids, "both servers should have answered"
    signal_pid(second.pid, signal.SIGTERM)
    assert second.wait(30) == 0
    held.close()


def test_watchdog_interval_is_parsed_strictly() -> None:
    """The unit-level rules of appserver.sdnotify (no process needed)."""
    from appserver.sdnotify import NotifyAddressError, message, parse_address, watchdog_interval

    assert parse_address("@name") == b"\0name" and parse_address("/run/x") == "/run/x"
    with pytest.raises(NotifyAddressError, match="vsock"):
        parse_address("vsock:2:1234")
    assert message(STATUS="a\nb", READY=1) == b"STATUS=a b\nREADY=1\n"
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 5) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "6"}, 5) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 5) is None

