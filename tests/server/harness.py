"""Run a real ``appserver`` master for the tests, find its processes, and drive bounded load.

Every server started here carries a unique token in its environment (``MASTER_TEST_TOKEN``); its
workers inherit it and so does a new master started by USR2.  Scanning ``/proc/*/environ`` for
the token finds every process of that run -- including ones re-parented after their master
exited -- so the finalizer stops exactly the processes this test started, by PID, and a test can
assert that nothing is left running.  Every wait has a deadline.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from appserver._build import PURE_ENV  # the build under test (./run-tests' pure pass): kept
from appserver.testing import free_port

HERE = Path(__file__).resolve().parent
TOKEN_VAR = "MASTER_TEST_TOKEN"   # not APPSERVER_*: those are settings
BOOTED = re.compile(r"worker (\d+) booted \((\w+), generation (\d+)\)")
NEW_MASTER = re.compile(r"upgrade: started new master (\d+)")


class Timeout(AssertionError):
    pass


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05, details: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details else ""
            raise Timeout(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on ``port``."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


# ---- processes ------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(item) for item in fh.read().split()]
    except OSError:
        return []


def token_pids(token: str) -> list[int]:
    """Every live process whose environment carries ``token``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(name)):
            found.append(int(name))
    return found


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ---- HTTP -----------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def pid(self) -> int:
        match = re.match(rb"pid=(\d+)", self.body)
        assert match, f"unexpected body {self.body!r}"
        return int(match.group(1))


def request(conn: http.client.HTTPConnection, path: str = "/", method: str = "GET",
            body: bytes | None = None) -> Reply:
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    data = resp.read()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)


# ---- the server -----------------------------------------------------------------------------


@dataclass
class Server:
    """One ``appserver serve`` master started by a test, and everything needed to stop it."""

    workdir: Path
    argv: list[str]
    token: str
    proc: subprocess.Popen[bytes]
    errorlog: Path
    stderr_path: Path
    unix_path: str | None = None
    port: int | None = None
    extra_logs: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- logs --

    def log(self) -> str:
        parts = []
        for path in [*self.extra_logs, self.errorlog, self.stderr_path]:
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "".join(parts)

    def tail(self, lines: int = 60) -> str:
        text = self.log().splitlines()[-lines:]
        return "--- server log (tail) ---\n" + "\n".join(text)

    def wait_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[re.Match[str]]:
        regex = re.compile(pattern)

        def found() -> list[re.Match[str]] | None:
            matches = list(regex.finditer(self.log()))
            return matches if len(matches) >= count else None

        result: list[re.Match[str]] = wait_for(found, timeout, f"log line /{pattern}/ x{count}",
                                               details=self.tail)
        return result

    def booted(self) -> dict[int, int]:
        """Worker pid -> generation, for every "worker N booted" line so far."""
        return {int(m.group(1)): int(m.group(3)) for m in BOOTED.finditer(self.log())}

    # -- processes --

    def workers(self, master: int | None = None) -> list[int]:
        """Live, booted workers of ``master`` (default: the master this test started)."""
        booted = self.booted()
        return sorted(p for p in children(master or self.pid) if p in booted and alive(p))

    def wait_workers(self, count: int, timeout: float = 15.0, master: int | None = None,
                     exclude: Iterable[int] = ()) -> list[int]:
        """Wait until exactly ``count`` booted workers run (none of them in ``exclude``)."""
        excluded = set(exclude)

        def ready() -> list[int] | None:
            if master is None and self.proc.poll() is not None:
                raise AssertionError(f"the master exited with {self.proc.returncode}\n{self.tail()}")
            pids = self.workers(master)
            if len(pids) == count and not excluded.intersection(pids):
                return pids
            return None

        result: list[int] = wait_for(ready, timeout, f"{count} booted workers", details=self.tail)
        return result

    def all_pids(self) -> list[int]:
        return token_pids(self.token)

    # -- HTTP --

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.unix_path:
            return UnixHTTPConnection(self.unix_path, timeout=timeout)
        assert self.port is not None
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str = "/", timeout: float = 10.0) -> Reply:
        conn = self.connection(timeout)
        try:
            return request(conn, path)
        finally:
            conn.close()

    def accepts(self) -> bool:
        try:
            return self.get("/", timeout=2.0).status == 200
        except OSError:
            return False

    # -- stopping --

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"the master did not exit within {timeout}s\n{self.tail()}") from None

    def wait_gone(self, timeout: float = 10.0) -> None:
        """Wait until no process of this run is left."""
        wait_for(lambda: not self.all_pids(), timeout, "every process of the run to exit",
                 details=lambda: f"left: {self.all_pids()}\n{self.tail()}")

    def kill_everything(self) -> None:
        """Finalizer: TERM the master if it runs, then SIGKILL whatever of this run is left."""
        if self.proc.poll() is None:
            signal_pid(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            left = self.all_pids()
            if not left:
                break
            for pid in left:
                signal_pid(pid, signal.SIGKILL)
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


# Configuration a caller's environment must not hand to a server under test.
SCRUBBED = ("GUNICORN_CMD_ARGS", "APPSERVER_CMD_ARGS", "WEB_CONCURRENCY", "PORT")


class Gunicorn:
    """gunicorn 27 run as the reference, in a directory of its own; stopped by the fixture."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("APPSERVER_") and k not in SCRUBBED}
        environ.update(env or {})
        # Its control socket lives in $HOME by default: keep it in the test's directory.
        argv = [sys.executable, "-m", "gunicorn", "--no-control-socket", *args]
        with open(cwd / "gunicorn.stderr", "ab") as err:
            proc = subprocess.Popen(argv, cwd=cwd, env=environ, stdout=err, stderr=err,
                                    stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("APPSERVER_") and k not in SCRUBBED}
        environ.update(env or {})
        return subprocess.run([sys.executable, "-m", "gunicorn", *args], cwd=cwd, env=environ,
                              capture_output=True, text=True, timeout=timeout)

    def workers(self, proc: subprocess.Popen[bytes]) -> list[int]:
        return children(proc.pid)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
        signal_pid(proc.pid, signal.SIGTERM)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                kids = children(proc.pid)
                signal_pid(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    for pid in [proc.pid, *kids]:
                        signal_pid(pid, signal.SIGKILL)
                    proc.wait(5)
            for pid in children(proc.pid):
                signal_pid(pid, signal.SIGKILL)


class Launcher:
    """Starts servers for one test and stops every one of them in ``close()`` (a finalizer)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[Server] = []
        self._count = 0

    def start(self, *options: str, app: str = "apps:hello", bind: str = "unix",
              workers: int | None = 2, wait: bool = True, errorlog: Path | None = None,
              env: dict[str, str] | None = None, timeout: float = 15.0,
              unix_path: str | None = None, expect: int | None = None) -> Server:
        """Start ``appserver serve``.

        ``bind``: "unix" (a socket in the work dir), "tcp" (a free port), "both", or "none" (the
        options carry the binds).  With ``wait`` the call returns once ``workers`` workers have
        booted (``expect`` of them, when the count comes from elsewhere) and the server answers.
        """
        self._count += 1
        run = self.workdir / f"run{self._count}"
        run.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "appserver", "serve"]
        unix = unix_path
        port = None
        if bind in ("unix", "both"):
            unix = unix or str(run / "app.sock")
            argv += ["-b", f"unix:{unix}"]
        if bind in ("tcp", "both"):
            port = free_port()
            argv += ["-b", f"127.0.0.1:{port}"]
        if workers is not None:
            argv += ["-w", str(workers)]
        errorlog = errorlog or run / "error.log"
        argv += ["--error-logfile", str(errorlog), *options]
        if app in ("apps:hello", "apps:environ") and "asgi" in options:
            app = app.replace(":", ":asgi_")  # -k asgi: the ASGI twin of the app
        if app:
            argv.append(app)
        token = uuid.uuid4().hex
        environ = {k: v for k, v in os.environ.items()
                   if (not k.startswith("APPSERVER_") or k == PURE_ENV) and k != "WEB_CONCURRENCY"}
        environ.update({TOKEN_VAR: token, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1",
                        # Its default control socket in its own run directory: servers a test
                        # process runs at once (a session-scoped one, another file's) never
                        # share one path, which would warn "already listening".
                        "XDG_RUNTIME_DIR": str(run)})
        environ.update(env or {})
        stderr_path = run / "stderr.log"
        with open(stderr_path, "wb") as err, open(run / "stdout.log", "wb") as out:
            proc = subprocess.Popen(argv, cwd=run, env=environ, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL)
        server = Server(run, argv, token, proc, errorlog, stderr_path, unix_path=unix, port=port)
        self.servers.append(server)
        if wait:
            count = expect if expect is not None else workers
            assert count is not None
            server.wait_workers(count, timeout=timeout)
            wait_for(server.accepts, timeout, "the server to answer", details=server.tail)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.kill_everything()


# ---- load -----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int
    failures: list[str]
    pids: set[int]


class BoundedLoad:
    """The skeleton of a load generator: ``threads`` client threads that send requests until
    stopped, ``limit`` requests or ``deadline`` seconds have passed -- a load is always bounded.
    A subclass implements ``_run(index)`` (calling ``_take()`` before each request) and ``done``
    (requests answered or failed so far)."""

    def __init__(self, *, threads: int, limit: int, deadline: float, name: str = "load") -> None:
        self.limit = limit
        self.deadline = time.monotonic() + deadline
        self._lock = threading.Lock()
        self._issued = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"{name}-{i}") for i in range(threads)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def done(self) -> int:
        raise NotImplementedError

    def _run(self, index: int) -> None:
        raise NotImplementedError

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.limit or time.monotonic() > self.deadline:
                return False
            self._issued += 1
            return True

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def wait_done(self, count: int, timeout: float = 20.0,
                  details: Callable[[], str] | None = None) -> None:
        """Wait until ``count`` more requests than now have completed (or the load ended)."""
        target = self.done + count

        def reached() -> bool:
            if self.done >= target:
                return True
            if not self.running():
                raise AssertionError(f"the load ended (limit {self.limit} or its deadline) before "
                                     f"{count} more requests; raise its limit")
            return False

        wait_for(reached, timeout, f"{count} more requests of load", details=details)

    def _halt(self, timeout: float) -> None:
        """Stop the threads (each finishes the request it is in) and wait for them."""
        self._stop.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        assert not self.running(), "the load threads did not stop"


class Load(BoundedLoad):
    """Bounded background load: ``threads`` clients, at most ``limit`` requests in all.

    Even-numbered threads keep one connection alive and alternate GET and POST on it (http.client
    reconnects only when the server announced ``Connection: close``, so a keep-alive connection
    closed without notice shows up as a failure, as it would behind nginx); odd-numbered threads
    open a new connection per request.  Every exception, non-200 status or wrong body is a failure.
    """

    def __init__(self, server: Server, *, threads: int = 2, limit: int = 2000, path: str = "/",
                 pause: float = 0.0, deadline: float = 60.0) -> None:
        self.server = server
        self.path = path
        self.pause = pause
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        super().__init__(threads=threads, limit=limit, deadline=deadline)

    def __exit__(self, *exc: object) -> None:
        self.stop(expect_running=False)

    @property
    def done(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)

    def _run(self, index: int) -> None:
        keep = index % 2 == 0
        conn: http.client.HTTPConnection | None = None
        n = 0
        while self._take():
            n += 1
            post = keep and n % 2 == 0
            if conn is None or not keep:
                conn = self.server.connection(timeout=10.0)
            try:
                reply = request(conn, self.path, method="POST" if post else "GET",
                                body=b"x" * 100 if post else None)
                expected = b" body=100" if post else b""
                if reply.status != 200 or not reply.body.rstrip().endswith(expected) \
                        or not reply.body.startswith(b"pid="):
                    raise AssertionError(f"status {reply.status}, body {reply.body[:80]!r}")
                with self._lock:
                    self.ok += 1
                    self.pids.add(reply.pid)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                with self._lock:
                    self.failures.append(f"{'keep-alive' if keep else 'new'} "
                                         f"{'POST' if post else 'GET'}: {exc!r}")
                conn.close()
                conn = None
            if not keep and conn is not None:
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def wait_done(self, count: int, timeout: float = 20.0,
                  details: Callable[[], str] | None = None) -> None:
        super().wait_done(count, timeout, details or self.server.tail)

    def stop(self, timeout: float = 20.0, *, expect_running: bool = True) -> LoadResult:
        """Stop the load; by default it must still be running (so it spanned what was tested)."""
        if expect_running:
            assert self.running(), "the load ended before it was stopped; raise its limit"
        self._halt(timeout)
        return LoadResult(self.ok, list(self.failures), set(self.pids))

    def finish(self, timeout: float = 30.0) -> LoadResult:
        """Let the load run to its limit, then report."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        return self.stop(expect_running=False)
