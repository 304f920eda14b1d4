"""The local stack: nginx and the app server as plain processes, configs rendered under a run dir.

Design note (processes and signals).  Both children start in their own session, so a Ctrl-C in
the terminal reaches only this process, which then stops them in order: nginx first (SIGQUIT, its
graceful stop: no new requests, in-flight ones finish), then the server (SIGTERM, its graceful
stop, bounded by graceful_timeout).  With ``[metrics]`` on, prometheus-nginx-exporter (when
installed) runs as a third child, started after nginx and stopped before it (SIGTERM).  Each
wait is bounded; past it the child's own process group (which it leads, so it holds only its
workers) gets SIGKILL, which also reaches nginx workers or server workers orphaned by a killed
master.  Signal handlers only set an event; the loop in :func:`run_until_signalled` acts on it.
With ``[redis] mode = "local"`` a redis-server (:mod:`appserver.bundle.redisproc`) starts first,
on a unix socket in the run directory, and stops last, after the server (whose workers publish
their clients' goodbyes on the way out); the server gets its URL as APPSERVER_REDIS_URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

import appserver
from appserver.bundle.healthcheck import probe
from appserver.bundle.loading import Loaded
from appserver.bundle.plan import Plan
from appserver.bundle.redisproc import RedisError, RedisServer
from appserver.bundle.render import render_local, write_files
from appserver.bundle.settings_redis import ENV_VAR as REDIS_ENV_VAR
from appserver.bundle.tools import NGINX_INSTALL_HINT, find_exporter, find_nginx, nginx_test

NGINX_STOP_TIMEOUT = 10.0
EXPORTER_STOP_TIMEOUT = 5.0
SERVER_STOP_MARGIN = 5.0  # past graceful_timeout


# sun_path holds 108 bytes on Linux, the terminating NUL included (unix(7)).
UNIX_PATH_MAX = 107


class StackError(RuntimeError):
    """The stack could not start; the message says why and what to look at."""


class RunDirError(StackError):
    """The run directory cannot be used; the message names the path (the caller names the way
    to choose another: ``--run-dir`` or ``run_dir=``)."""


class LocalStack:
    """nginx + app server for one settings file; a context manager that always stops both."""

    def __init__(self, loaded: Loaded, run_dir: Path, *, port: int | None = None,
                 tls_port: int | None = None, server_command: Sequence[str] | None = None,
                 nginx: str | None = None, capture_logs: bool = True,
                 wait_healthy: bool = True) -> None:
        self.loaded = loaded
        self.run_dir = run_dir.absolute()
        self.port = port
        self.tls_port = tls_port
        self._server_command = list(server_command) if server_command else None
        self._nginx = nginx
        self.capture_logs = capture_logs  # False: children write to this terminal
        # True: ready once app.health_path answers 200; False: once the app answers at all
        # (an app without a health endpoint, in the test harness).
        self.wait_healthy = wait_healthy
        self.server: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None
        self.exporter: subprocess.Popen[bytes] | None = None
        self.redis: RedisServer | None = None  # [redis] mode = "local"
        self.notes: list[str] = []  # what the stack left out, for `appserver up` to print
        self.plan: Plan | None = None
        self._logs: list[IO[bytes]] = []

    # ---- set-up -----------------------------------------------------------------------------

    def prepare(self) -> Plan:
        """Render nginx.conf and appserver.toml into the run directory; check with nginx -t."""
        nginx = self._nginx or find_nginx()
        if nginx is None:
            raise StackError(NGINX_INSTALL_HINT)
        self._nginx = nginx
        plan, files = render_local(self.loaded, self.run_dir, port=self.port,
                                   tls_port=self.tls_port)
        self._make_run_dir(plan)
        try:
            write_files(self.run_dir, files)
        except OSError as exc:
            raise RunDirError(f"cannot write into the run directory {self.run_dir}: "
                              f"{exc.strerror or exc}") from None
        result = nginx_test(nginx, self.run_dir / "nginx.conf", self.run_dir)
        if not result.ok:
            raise StackError(f"nginx -t rejected {self.run_dir / 'nginx.conf'}:\n{result.output}")
        self.plan = plan
        return plan

    def _make_run_dir(self, plan: Plan) -> None:
        run_dir = self.run_dir
        socket_bytes = len(os.fsencode(plan.socket_path))
        if socket_bytes > UNIX_PATH_MAX:
            raise RunDirError(f"the run directory {run_dir} is too deep for a unix socket: "
                              f"{plan.socket_path} is {socket_bytes} bytes, and a socket path "
                              f"holds at most {UNIX_PATH_MAX}")
        for parent in (run_dir, *run_dir.parents):
            if parent.exists() and not parent.is_dir():
                raise RunDirError(f"cannot use {run_dir} as the run directory: {parent} exists "
                                  f"and is not a directory")
        try:
            (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create the run directory {run_dir}: "
                              f"{exc.strerror or exc}") from None
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise RunDirError(f"cannot use {run_dir} as the run directory: not writable")

    @property
    def url(self) -> str:
        if self.plan is None:
            raise StackError("the stack is not prepared")
        host, _, port = self.plan.http_listens[0].rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{port}"

    def server_command(self) -> list[str]:
        assert self.plan is not None
        return self._server_command or [sys.executable, "-m", "appserver", "serve",
                                        "--settings", self.plan.server_config_path]

    def _spawn(self, argv: list[str], log_name: str,
               extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, **(extra_env or {})}
        # Run from a source checkout too: the package's parent directory goes on the path.
        package_root = str(Path(appserver.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        out: IO[bytes] | None = None
        if self.capture_logs:
            out = open(self.run_dir / log_name, "ab")  # noqa: SIM115 (closed in stop())
            self._logs.append(out)
        return subprocess.Popen(argv, cwd=self.run_dir, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)

    def start(self, timeout: float = 30.0) -> str:
        """Start the server, wait until it answers its health path (see ``wait_healthy``), then
        nginx; return the URL."""
        plan = self.plan or self.prepare()
        socket_path = Path(plan.socket_path)
        self.server = self._spawn(self.server_command(), "appserver.log",
                                  {REDIS_ENV_VAR: self._start_redis()})
        deadline = time.monotonic() + timeout
        detail = "no socket yet"
        while True:
            if self.server.poll() is not None:
                self.stop()
                raise StackError(f"the app server exited with status {self.server.returncode} "
                                 f"before it was ready{self._log_hint('appserver.log')}")
            if socket_path.exists():
                healthy, detail = probe(str(socket_path), self.loaded.settings.app.health_path)
                if healthy or (not self.wait_healthy and detail.startswith("HTTP/")):
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"the app server was not healthy within {timeout:.0f}s "
                                 f"({detail}){self._log_hint('appserver.log')}")
            time.sleep(0.05)
        assert self._nginx is not None
        self.nginx = self._spawn([self._nginx, "-p", f"{self.run_dir}/", "-c",
                                  str(self.run_dir / "nginx.conf"), "-e", plan.error_log],
                                 "nginx.log")
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        while True:
            if self.nginx.poll() is not None:
                self.stop()
                raise StackError(f"nginx exited with status {self.nginx.returncode}"
                                 f"{self._log_hint(Path(plan.error_log).name)}")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"nginx did not listen on {host}:{port} within {timeout:.0f}s"
                                 f"{self._log_hint(Path(plan.error_log).name)}")
            time.sleep(0.05)
        self._start_exporter(plan)
        return self.url

    def _start_redis(self) -> str:
        """The server's APPSERVER_REDIS_URL: a redis-server of our own for mode "local", the
        settings' URL for "url", and empty for "off" (which then wins over a REDIS_URL that
        happens to be in this environment: the settings say where the rooms meet)."""
        redis = self.loaded.settings.redis
        if redis.mode == "url":
            return redis.url or ""
        if redis.mode == "off":
            return ""
        self.redis = RedisServer(self.run_dir / "redis")
        try:
            url = self.redis.start()
        except RedisError as exc:
            self.redis = None
            raise StackError(str(exc)) from None
        self.notes.append(f"redis-server pid {self.redis.pid} on {self.redis.socket} "
                          f"(log and append-only file in {self.redis.directory})")
        return url

    def _start_exporter(self, plan: Plan) -> None:
        """prometheus-nginx-exporter for nginx's stub_status, when [metrics] asks for it."""
        m = plan.metrics
        if m is None or m.nginx_status_url is None or m.exporter_listen is None:
            return
        exporter = find_exporter()
        if exporter is None:
            self.notes.append(
                "nginx's numbers: prometheus-nginx-exporter is not installed, so the nginx job of "
                "prometheus.yml finds nothing (Debian: apt-get install prometheus-nginx-exporter)")
            return
        self.exporter = self._spawn([exporter, *m.exporter_args], "nginx-exporter.log")

    def _log_hint(self, name: str) -> str:
        path = self.run_dir / name
        if not path.is_file():
            return ""
        tail = path.read_text(errors="replace").splitlines()[-15:]
        return f"; last lines of {path}:\n" + "\n".join(tail)

    # ---- tear-down --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop nginx, then the server, gracefully and with bounded waits; idempotent."""
        grace = (self.plan.server.graceful_timeout if self.plan else 30) + SERVER_STOP_MARGIN
        _stop(self.exporter, signal.SIGTERM, EXPORTER_STOP_TIMEOUT)
        _stop(self.nginx, signal.SIGQUIT, NGINX_STOP_TIMEOUT)
        _stop(self.server, signal.SIGTERM, grace)
        if self.redis is not None:
            self.redis.stop()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, timeout: float) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # The child led its own process group; whatever is left in it (a hung master, or workers
    # orphaned by a master that died) gets SIGKILL.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run_until_signalled(stack: LocalStack, out: IO[str] = sys.stdout) -> int:
    """`appserver up`: start, print the URL, stop on SIGINT/SIGTERM or when a child dies."""
    stop = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = stack.start()
        print(f"appserver up: {url}/  (nginx pid {stack.nginx.pid if stack.nginx else '?'}, "
              f"server pid {stack.server.pid if stack.server else '?'}; run dir {stack.run_dir})",
              file=out, flush=True)
        for note in stack.notes:
            print(f"appserver up: {note}", file=out, flush=True)
        print("Ctrl-C stops both.", file=out, flush=True)
        status = 0
        while not stop.wait(0.5):
            for name, proc in (("nginx", stack.nginx), ("app server", stack.server)):
                if proc is not None and proc.poll() is not None:
                    print(f"appserver up: {name} exited with status {proc.returncode}; "
                          f"stopping", file=out, flush=True)
                    status = 1
                    stop.set()
        if received:
            print(f"appserver up: {signal.Signals(received[0]).name}: stopping nginx, then the "
                  f"app server", file=out, flush=True)
        return status
    finally:
        stack.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
