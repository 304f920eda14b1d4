"""App faults on every worker class: the server keeps serving, and the log says what happened.

One server per class (module-scoped and all started at once, one worker each, so every fault
lands on the worker the test watches) serves the misbehaving app ``fault_apps:app`` (on ``-k asgi``
its twin ``fault_apps:asgi_app``, the same faults); each test provokes one fault and checks:

* what the client sees: a complete 500 while no byte of the response has been sent; once the
  head is out, a connection that is cut (a chunked body without its last chunk, or fewer bytes
  than Content-Length), so the client can tell the response is incomplete;
* that a normal request is served afterwards (by the same worker when only a request failed, by a
  fresh one when the worker died or was recycled);
* the error log line that explains it.

Each outcome is a row of the "app_faults" table of docs/reliability.md.  ``--timeout 2`` and a
``--max-worker-memory`` well above a worker's resting size keep the file fast.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.common import WORKER_CLASSES, app_for, is_asgi, selected_classes
from tests.reliability.report import Recorder
from tests.server.harness import Launcher, Server, signal_pid, wait_for

HERE = Path(__file__).resolve().parent
TIMEOUT = 2
MEMORY_LIMIT_MIB = 128
LEAK_MIB = 48
OPTIONS = ["--timeout", str(TIMEOUT), "--graceful-timeout", "3", "--keep-alive", "5",
           "--max-worker-memory", f"{MEMORY_LIMIT_MIB}M"]
GREEN = {"gevent", "eventlet"}
LOG_PREFIX = re.compile(r"^\[[^\]]*\] \[\d+\] \[\w+\] ")


# ---- the server of one class ------------------------------------------------------------------


@dataclass
class Target:
    name: str
    server: Server
    app_threads: int            # requests that must hang before the worker is stuck

    def worker(self, replacing: int | None = None) -> int:
        """The one worker now serving; with ``replacing``, waits until another one replaced it."""
        [pid] = self.server.wait_workers(1, timeout=20, exclude=[replacing] if replacing else [])
        return pid

    # -- the error log, from a mark on --

    def mark(self) -> int:
        return len(self.error_log())

    def error_log(self) -> str:
        try:
            return self.server.errorlog.read_text(errors="replace")
        except OSError:
            return ""

    def log_since(self, mark: int) -> str:
        return self.error_log()[mark:]

    def wait_log(self, mark: int, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern)
        found: re.Match[str] = wait_for(lambda: regex.search(self.log_since(mark)), timeout,
                                        f"log line /{pattern}/", details=self.server.tail)
        return found


def app_threads(name: str) -> int:
    """Requests that must hang before a worker of this class is stuck."""
    options = WORKER_CLASSES[name]
    if name in GREEN or "--threads" not in options:
        return 1
    return int(options[options.index("--threads") + 1])


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, Server]]:
    """One server per selected class, all started at once (they boot in parallel)."""
    workdir = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))  # short: unix socket paths
    launcher = Launcher(workdir)
    try:
        yield {name: launcher.start(*WORKER_CLASSES[name], *OPTIONS,
                                    app=app_for(name, "fault_apps:app"),
                                    workers=1, env={"PYTHONPATH": str(HERE)}, wait=False)
               for name in selected_classes()}
    finally:
        for server in launcher.servers:  # stop them all at once, then make sure
            if server.proc.poll() is None:
                signal_pid(server.pid, signal.SIGTERM)
        launcher.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=selected_classes())
def target(request: pytest.FixtureRequest, fleet: dict[str, Server]) -> Target:
    name = request.param
    server = fleet[name]
    server.wait_workers(1, timeout=30)
    wait_for(server.accepts, 15, "the server to answer", details=server.tail)
    return Target(name, server, app_threads(name))


# ---- raw HTTP/1.1 exchanges -------------------------------------------------------------------


@dataclass
class Exchange:
    """One request on a fresh connection, read until the response is complete, the server closed
    the connection, or the deadline passed."""

    raw: bytes = b""
    closed: bool = False        # EOF or reset from the server
    reset: bool = False
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    framing: str = ""           # "chunked", "length" or "close"
    complete: bool = False
    seconds: float = 0.0

    def describe(self) -> str:
        if self.status is None:
            how = "reset" if self.reset else "closed"
            return f"no response (connection {how} after {self.seconds:.1f}s)"
        if self.complete:
            return str(self.status)
        if self.framing == "chunked":
            return (f"{self.status} head + {len(self.body)} body bytes, then the connection was "
                    f"closed before the last chunk")
        if self.framing == "length":
            return (f"{self.status} head + {len(self.body)} of {self.headers['content-length']} "
                    f"bytes (Content-Length), then the connection was closed")
        return f"{self.status} head, close-delimited body ({len(self.body)} bytes)"


def _parse(ex: Exchange) -> None:
    head_end = ex.raw.find(b"\r\n\r\n")
    if head_end < 0:
        return
    lines = ex.raw[:head_end].decode("latin-1").split("\r\n")
    ex.status = int(lines[0].split()[1])
    ex.headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        ex.headers[name.strip().lower()] = value.strip()
    rest = ex.raw[head_end + 4:]
    if "chunked" in ex.headers.get("transfer-encoding", "").lower():
        ex.framing = "chunked"
        body = bytearray()
        while True:
            line_end = rest.find(b"\r\n")
            if line_end < 0:
                break
            size = int(rest[:line_end].split(b";")[0], 16)
            if size == 0:
                ex.complete = rest[line_end + 2:].startswith(b"\r\n")
                break
            data = rest[line_end + 2:line_end + 2 + size]
            body += data
            if len(data) < size or rest[line_end + 2 + size:line_end + 4 + size] != b"\r\n":
                break
            rest = rest[line_end + 4 + size:]
        ex.body = bytes(body)
    elif "content-length" in ex.headers:
        ex.framing = "length"
        length = int(ex.headers["content-length"])
        ex.body = rest[:length]
        ex.complete = len(ex.body) == length
    else:
        ex.framing = "close"
        ex.body = rest
        ex.complete = ex.closed


def exchange(server: Server, path: str, timeout: float = 10.0, until_eof: bool = False) -> Exchange:
    ex = Exchange()
    started = time.monotonic()
    if server.unix_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = server.unix_path
    else:
        sock = socket.socket()
        address = ("127.0.0.1", server.port)
    deadline = started + timeout
    try:
        sock.settimeout(timeout)
        sock.connect(address)  # type: ignore[arg-type]
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: faults\r\n\r\n".encode())
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                ex.closed = ex.reset = True
                break
            if not data:
                ex.closed = True
                break
            ex.raw += data
            _parse(ex)
            if ex.complete and not until_eof:
                break
    finally:
        sock.close()
        ex.seconds = time.monotonic() - started
    _parse(ex)
    return ex


def served_pid(target: Target, path: str = "/") -> int:
    ex = exchange(target.server, path)
    assert ex.status == 200 and ex.complete, f"{path}: {ex.describe()} {ex.raw[:200]!r}"
    match = re.search(rb"pid=(\d+)", ex.body)
    assert match, ex.body
    return int(match.group(1))


def excerpt(log: str, pattern: str, *extra: str) -> str:
    """The log line matching ``pattern`` (without its date/pid/level prefix), and the lines
    matching ``extra`` after it, joined with " / "."""
    lines = log.splitlines()
    index = next(i for i, line in enumerate(lines) if re.search(pattern, line))
    parts = [LOG_PREFIX.sub("", lines[index])]
    for wanted in extra:
        parts += [LOG_PREFIX.sub("", line).strip()
                  for line in lines[index + 1:] if re.search(wanted, line)][:1]
    text = " / ".join(parts)
    return re.sub(r"\b(worker|master) \d+", r"\1 N", text)


def record(reliability: Recorder, target: Target, fault: str, status: str, after: str,
           log: str) -> None:
    reliability.record("app_faults", fault=fault, **{"class": target.name, "status seen": status,
                                                     "served after": after, "log says": log})


# ---- app errors: the worker survives ----------------------------------------------------------

RAISES = [
    # (path, fault, status the client must see)
    ("/raise-before", "raise before start_response", "500"),
    ("/raise-after", "raise after start_response (before any byte)", "500"),
    ("/raise-in-body-first", "raise in the body iterator, before its first chunk", "500"),
    ("/raise-in-body-chunked", "raise in the body iterator, after a chunk (chunked)", "cut"),
    ("/raise-in-body-length", "raise in the body iterator, short of Content-Length", "cut"),
]


@pytest.mark.parametrize("path,fault,expected", RAISES, ids=[r[0].strip("/") for r in RAISES])
def test_app_raises(target: Target, reliability: Recorder, path: str, fault: str,
                    expected: str) -> None:
    worker = target.worker()
    mark = target.mark()
    ex = exchange(target.server, path, until_eof=True)
    if expected == "500":
        assert ex.status == 500 and ex.complete, f"{ex.describe()}: {ex.raw[:300]!r}"
        assert ex.headers.get("connection", "").lower() == "close"
        assert ex.closed and ex.seconds < 5, "the connection was not closed after the 500"
    else:
        # The head (200) went out before the app failed: the only honest signal left is to cut
        # the connection, promptly, leaving a body the client can see is incomplete.
        assert ex.status == 200, f"{ex.describe()}: {ex.raw[:300]!r}"
        assert ex.closed and not ex.complete, f"{ex.describe()}: {ex.raw[:300]!r}"
        assert ex.seconds < 5, f"the connection was left open for {ex.seconds:.1f}s"
        assert ex.framing == ("chunked" if "chunked" in path else "length"), ex.describe()
    line = target.wait_log(mark, rf"(app error|invalid response from the app) handling GET "
                                 rf"{re.escape(path)}\b")
    log = target.log_since(mark)
    assert "Traceback (most recent call last)" in log[line.start():], log
    assert "Fault: fault: raised" in log, log
    assert served_pid(target) == worker, "a request's error must not end its worker"
    assert target.server.workers() == [worker]
    assert not re.search(r"exited with status|crashed|killed", target.log_since(mark)), log
    record(reliability, target, fault, ex.describe(), "yes (same worker)",
           excerpt(log, r"handling GET", r"Fault: "))


# ---- faults that end the worker ---------------------------------------------------------------


def test_memory_leak_is_recycled(target: Target, reliability: Recorder) -> None:
    worker = target.worker()
    mark = target.mark()
    retired = re.compile(rf"worker {worker} retired: resident memory [\d.]+ MiB above "
                         rf"--max-worker-memory {MEMORY_LIMIT_MIB} MiB")
    statuses = []
    for _ in range(2 * MEMORY_LIMIT_MIB // LEAK_MIB + 2):
        ex = exchange(target.server, f"/leak?mib={LEAK_MIB}")
        statuses.append(ex.status)
        assert ex.status == 200 and ex.complete, ex.describe()
        if str(worker).encode() not in ex.body:
            break  # a fresh worker answered: the leaking one has been recycled
        if retired.search(target.log_since(mark)):
            break
        time.sleep(0.4)  # a leak over time: the worker checks its memory once a second
    target.wait_log(mark, retired.pattern, timeout=10)
    fresh = target.worker(replacing=worker)
    assert served_pid(target) == fresh
    log = target.log_since(mark)
    assert not re.search(r"killed|exited with status|crashed", log), log
    record(reliability, target, f"leak {LEAK_MIB} MiB per request (--max-worker-memory "
           f"{MEMORY_LIMIT_MIB}M)", f"200 x {len(statuses)}", "yes (new worker)",
           excerpt(log, retired.pattern))


@pytest.mark.parametrize("status", [3, 4])
def test_os_exit_in_a_request(target: Target, reliability: Recorder, status: int) -> None:
    worker = target.worker()
    mark = target.mark()
    ex = exchange(target.server, f"/exit?status={status}")
    assert ex.status is None and ex.closed, f"{ex.describe()}: {ex.raw[:300]!r}"
    target.wait_log(mark, rf"worker {worker} exited with status {status}\b")
    fresh = target.worker(replacing=worker)
    assert served_pid(target) == fresh
    log = target.log_since(mark)
    # A worker that had booted did not fail to load the app, whatever its exit status says.
    assert "failed to load" not in log and "stopping" not in log, log
    assert target.server.proc.poll() is None
    note = " (the app-load-error status)" if status == 4 else ""
    record(reliability, target, f"os._exit({status}) in a request{note}", ex.describe(),
           "yes (new worker)", excerpt(log, rf"worker \d+ exited with status {status}"))


def test_hang_is_killed_by_the_timeout(target: Target, reliability: Recorder) -> None:
    worker = target.worker()
    mark = target.mark()
    # A threaded worker is stuck once every app thread hangs; a green worker once its hub is
    # blocked (a blocking call the monkey-patching did not reach); sync at once.
    outcomes: list[Exchange] = []
    hangs = [threading.Thread(target=lambda: outcomes.append(exchange(target.server, "/hang",
                                                                      timeout=25)),
                              daemon=True) for _ in range(target.app_threads)]
    for thread in hangs:
        thread.start()
    killed = rf"worker {worker} timed out \(no heartbeat for more than {TIMEOUT}s, --timeout\) " \
             r"and was killed by the master with SIG(ABRT|KILL)"
    target.wait_log(mark, killed, timeout=20)
    fresh = target.worker(replacing=worker)
    assert served_pid(target) == fresh
    for thread in hangs:
        thread.join(10)
    assert len(outcomes) == target.app_threads
    for ex in outcomes:
        assert ex.status is None and ex.closed, ex.describe()
    log = target.log_since(mark)
    assert f"worker {worker} has been silent" in log, log
    assert "most recent call first" in log and "fault_apps.py" in log, log  # the stack dump
    assert "not by the master" not in log and "out-of-memory" not in log, log
    slowest = max(ex.seconds for ex in outcomes)
    requests = f"{target.app_threads} requests" if target.app_threads > 1 else "the request"
    # (-k asgi: the twin's hang is a blocking call in the coroutine, which stops the event loop)
    hang = "hang forever (a blocking call in the event loop)" if is_asgi(target.name) \
        else "hang forever (every app thread)"
    record(reliability, target, hang,
           f"no response: {requests} cut after {slowest:.1f}s",
           "yes (new worker)",
           excerpt(log, r"has been silent", r"timed out \(no heartbeat"))


def test_server_survived(target: Target) -> None:
    """After every fault: the master still runs, with one worker; no worker crashed, and the
    master logged no error but the worker deaths the faults explain."""
    assert target.server.proc.poll() is None
    target.worker()
    log = target.error_log()
    assert not re.search(r"worker \d+ crashed", log), target.server.tail()
    explained = re.compile(r"worker \d+ (exited with status \d|has been silent|timed out)")
    master_errors = [line for line in log.splitlines()
                     if f"[{target.server.pid}] [ERROR]" in line and not explained.search(line)]
    assert not master_errors, master_errors
