"""Slow clients (slowloris): 1,000 connections trickle their request heads straight to the app
server while a few normal clients keep sending requests.

Every worker class must go on serving the normal clients (every request answered, none waiting
for the tricklers) and drop every trickler once ``--header-timeout`` has passed, neither much later
(a trickler holding the worker) nor much earlier (refused at a connection cap instead of timed
out).  The normal clients' p99 and worst latency during the attack go to docs/reliability.md.

The tricklers run in one thread over non-blocking sockets (TCP loopback); the normal clients
alternate between the TCP listener and a unix-socket listener of the same server, each request on
a new connection, from a short warm-up on (only the requests started during the attack are
measured).  Every wait is bounded and the server is stopped by its PID.
"""

from __future__ import annotations

import resource
import selectors
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appserver.testing import AppServerProcess, free_port
from tests.reliability.common import WORKER_CLASSES, app_for, selected_classes
from tests.reliability.report import Recorder

REPO = Path(__file__).resolve().parents[2]

TRICKLERS = 1000
HEADER_TIMEOUT = 2.0
TRICKLE_INTERVAL = 0.5   # one byte of the head per trickler every this many seconds
DROP_SLACK = 2.5         # a trickler must be dropped within HEADER_TIMEOUT + this
EARLY = 0.25             # ... and not before HEADER_TIMEOUT - this
NORMAL_THREADS = 4
NORMAL_PAUSE = 0.02      # between two requests of one normal client
NORMAL_TIMEOUT = 10.0
SCENARIO = "1,000 tricklers, header timeout 2 s"

# Never completes within the test: ~90 bytes at 2 bytes a second.
SLOW_HEAD = (b"GET /hello HTTP/1.1\r\nHost: localhost\r\nUser-Agent: trickler\r\n"
             b"X-Padding: " + b"x" * 32 + b"\r\n\r\n")
NORMAL_REQUEST = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> None:
    """1,000 tricklers plus the normal clients in this process; the server processes inherit the
    limit, and a worker may hold every trickler."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 2 * TRICKLERS + 200:
        pytest.skip(f"open-file limit {soft} too low for {TRICKLERS} tricklers")


# ---- the tricklers ------------------------------------------------------------------------------

@dataclass
class Trickler:
    sock: socket.socket
    opened: float
    sent: int = 0
    dropped_at: float | None = None
    answer: bytes = b""   # what the server said before closing (nothing, or an error response)

    def send_next(self) -> None:
        self.sock.send(SLOW_HEAD[self.sent:self.sent + 1])
        self.sent += 1


def run_tricklers(address: tuple[str, int], count: int, give_up_after: float) -> list[Trickler]:
    """Open ``count`` connections, trickle a byte of a head on each every TRICKLE_INTERVAL, and
    note when the server closes each; stop once all are closed or ``give_up_after`` seconds after
    the last one opened."""
    selector = selectors.DefaultSelector()
    tricklers: list[Trickler] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(address, timeout=5)
            sock.setblocking(False)
            trickler = Trickler(sock, time.monotonic())
            trickler.send_next()
            selector.register(sock, selectors.EVENT_READ, trickler)
            tricklers.append(trickler)
        now = time.monotonic()
        # Spread the next bytes over one interval: a steady trickle, not a burst every interval.
        due = deque((now + TRICKLE_INTERVAL * (i + 1) / count, t) for i, t in enumerate(tricklers))
        deadline = now + give_up_after
        open_count = count

        def dropped(trickler: Trickler) -> None:
            nonlocal open_count
            trickler.dropped_at = time.monotonic()
            selector.unregister(trickler.sock)
            trickler.sock.close()
            open_count -= 1

        while open_count and now < deadline:
            wait = min(0.05, max(0.0, due[0][0] - now)) if due else 0.05
            for key, _ in selector.select(wait):
                trickler = key.data
                try:
                    data = trickler.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""  # reset: closed with our bytes unread
                if data:
                    trickler.answer += data
                else:
                    dropped(trickler)
            now = time.monotonic()
            while due and due[0][0] <= now:
                at, trickler = due.popleft()
                if trickler.dropped_at is not None:
                    continue
                try:
                    trickler.send_next()
                except BlockingIOError:
                    pass
                except OSError:
                    dropped(trickler)
                    continue
                due.append((at + TRICKLE_INTERVAL, trickler))
    finally:
        for trickler in tricklers:
            if trickler.dropped_at is None:
                trickler.sock.close()
        selector.close()
    return tricklers


# ---- the normal clients ---------------------------------------------------------------------------

@dataclass
class NormalClients:
    addresses: list[str]
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start, latency)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (start, what went wrong)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, index: int) -> None:
        address = self.addresses[index % len(self.addresses)]
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                answer = request(address)
            except OSError as exc:
                self.failures.append((started, f"{address}: {exc!r}"))
            else:
                if answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nhello\n"):
                    self.samples.append((started, time.monotonic() - started))
                else:
                    self.failures.append((started, f"{address}: {answer[:200]!r}"))
            self.stop.wait(NORMAL_PAUSE)

    def __enter__(self) -> NormalClients:
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(NORMAL_THREADS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(NORMAL_TIMEOUT + 5)
        assert not any(thread.is_alive() for thread in self.threads), "a normal client hangs"

    def warm_up(self, seconds: float, requests: int) -> None:
        """Until both workers serve: the first requests would measure a worker's start-up (the
        tornado class imports Tornado after it reports booted)."""
        deadline = time.monotonic() + 10
        time.sleep(seconds)
        while len(self.samples) < requests and not self.failures and time.monotonic() < deadline:
            time.sleep(0.05)


def request(address: str) -> bytes:
    """One request on a new connection; the whole answer (the server closes after it)."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(NORMAL_TIMEOUT)
        target: str | tuple[str, int] = address[5:]
    else:
        sock = socket.socket()
        sock.settimeout(NORMAL_TIMEOUT)
        host, _, port = address.rpartition(":")
        target = (host, int(port))
    with sock:
        sock.connect(target)
        sock.sendall(NORMAL_REQUEST)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---- the scenario -------------------------------------------------------------------------------

@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="slow-", dir="/tmp"))  # short: a unix socket path
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("name", selected_classes())
def test_tricklers_are_dropped_while_normal_clients_are_served(
        name: str, workdir: Path, reliability: Recorder) -> None:
    tcp = f"127.0.0.1:{free_port()}"
    unix = f"unix:{workdir / 'app.sock'}"
    args = [*WORKER_CLASSES[name], "-w", "2", "-b", tcp, "-b", unix,
            "--header-timeout", str(HEADER_TIMEOUT), "--timeout", "30", "--graceful-timeout", "5",
            app_for(name, "tests.behaviour.app:app")]
    server = AppServerProcess(args, log_path=workdir / "error.log", cwd=REPO,
                              env={"PYTHONPATH": str(REPO)})
    server.start(wait_for=[tcp, unix], workers=2, timeout=30)
    try:
        with NormalClients([tcp, unix]) as normal:
            normal.warm_up(0.5, requests=20)
            attack = time.monotonic()
            tricklers = run_tricklers(("127.0.0.1", int(tcp.rpartition(":")[2])), TRICKLERS,
                                      HEADER_TIMEOUT + DROP_SLACK)
    finally:
        code = server.stop()
    log = server.log_text()

    lifetimes = [t.dropped_at - t.opened for t in tricklers if t.dropped_at is not None]
    latencies = [latency for started, latency in normal.samples if started >= attack]
    failed = [what for started, what in normal.failures if started >= attack]
    p99 = percentile(latencies, 0.99) * 1000 if latencies else float("nan")
    worst = max(latencies) * 1000 if latencies else float("nan")
    reliability.record("slow_clients", scenario=SCENARIO, **{
        "class": name, "tricklers": len(tricklers), "dropped": len(lifetimes),
        "normal sent": len(latencies) + len(failed), "normal failed": len(failed),
        "normal p99 (ms)": round(p99, 1), "worst latency (ms)": round(worst, 1)})
    print(f"\n{name}: {len(lifetimes)}/{len(tricklers)} dropped after "
          f"{min(lifetimes, default=0):.2f}..{max(lifetimes, default=0):.2f} s; normal: "
          f"{len(latencies) + len(failed)} sent, {len(failed)} failed, p99 {p99:.1f} ms, "
          f"worst {worst:.1f} ms")

    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "crashed" not in log, log[-3000:]
    assert not normal.failures, normal.failures[:5]  # (warm-up included)
    assert len(latencies) >= 50, f"only {len(latencies)} normal requests during the attack"
    assert len(lifetimes) == TRICKLERS, f"{TRICKLERS - len(lifetimes)} tricklers never dropped"
    assert max(lifetimes) <= HEADER_TIMEOUT + DROP_SLACK  # (the give-up time, to be explicit)
    assert min(lifetimes) >= HEADER_TIMEOUT - EARLY, \
        f"{sum(x < HEADER_TIMEOUT - EARLY for x in lifetimes)} tricklers dropped early"
    # The normal clients must not wait for the tricklers: a request held up by one would take
    # about a header timeout.  (Loose bounds: the machine may be busy with other work.)
    assert p99 < HEADER_TIMEOUT * 1000 / 4, f"normal p99 {p99:.0f} ms"
    assert worst < HEADER_TIMEOUT * 1000, f"worst normal latency {worst:.0f} ms"
