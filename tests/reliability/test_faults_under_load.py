"""Faults under load, through real nginx: reloads, upgrades and killed workers.

For every worker class, one stack (nginx from the bundle's rendered config, the app server on its
unix socket, ``tests.reliability.apps:checksum`` as the app, ``asgi_checksum`` on ``-k asgi``) takes continuous load from a small
bounded generator (:class:`Traffic`: keep-alive clients on nginx's TCP port, half GETs and half
POSTs of random bodies) while the master is signalled or its workers are killed:

1. *reload storm*: HUP every ~1.5 s, with TTIN and TTOU in between (a worker added, one retired);
2. *kill -9*: random workers killed with SIGKILL, the master respawns them;
3. *USR2 upgrade*: a new master on the same socket, WINCH and then TERM to the old one.

Every answer is checked (status, and for a POST the sha256 and length of the body the app read);
the app also records each request id it saw and the digest of every whole body it received
(``RELIABILITY_RECORD_DIR``), so after the load a body recorded twice was duplicated and one
never recorded was lost.  Reloads and the upgrade must fail and lose nothing, and leave no error
in nginx's log (not even an upstream failure nginx hid by retrying a GET).  A killed worker may
fail at most the requests in flight on it: their number is bounded by the clients with a request
outstanding between the kill and the worker's death (one per kill on the sync class, which serves
one request at a time), and each failed request is traced through the app's record to a killed
worker or to none, never to a worker that lived on.  Every scenario's figures go to the "load"
table of docs/reliability.md.

During a reload or the upgrade a keep-alive connection also sits idle on an old worker, straight
on the socket, as nginx's cached upstream connections do: the retiring worker must close it quietly
once it has been idle a while, and crash on nothing (eventlet's did, which reset every connection
it held: see ``has_data`` in appserver/workers/pump.py).  No scenario may leave a traceback in the
server's log.

The scenarios of a class share its stack (in this order: the upgrade replaces the master, so it
comes last); the fixture stops every process by PID, the upgraded master included.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle.tools import find_nginx
from appserver.config import ServerConfig
from appserver.testing.stack import Stack, Stopped, start_stack
from tests.reliability.common import app_for, bundle_tables, selected_classes
from tests.reliability.report import Recorder
from tests.server.harness import (
    BOOTED,
    NEW_MASTER,
    BoundedLoad,
    UnixHTTPConnection,
    alive,
    children,
    request,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install nginx)"),
    pytest.mark.timeout(90),
]

REPO = Path(__file__).resolve().parents[2]
APP = "tests.reliability.apps:checksum"
WORKERS = 2
CLIENTS = 6                 # load threads, each with one keep-alive connection to nginx
REQUEST_TIMEOUT = 15.0      # per request; a request that takes longer counts as failed
HUPS = 3
HUP_INTERVAL = 1.5          # seconds between HUPs (the reload itself included)
KILLS = 3
GRACEFUL_TIMEOUT = 5


def server_settings(name: str, record_dir: Path) -> dict[str, Any]:
    """The class's CLI options (common.WORKER_CLASSES) as the bundle's [server] table."""
    table = bundle_tables(name)["server"]
    for key in table:
        assert key in ServerConfig.model_fields, f"{key}: not a server setting"
    table.update(workers=WORKERS, timeout=10, graceful_timeout=GRACEFUL_TIMEOUT,
                 raw_env=[f"RELIABILITY_RECORD_DIR={record_dir}"])
    return table


# ---- the load -------------------------------------------------------------------------------


@dataclass
class Outcome:
    sent: int
    failures: dict[str, str]  # request id -> what went wrong
    worst_ms: float
    posts: dict[str, bool]    # sha256 of every POST body sent -> answered correctly

    @property
    def failed(self) -> int:
        return len(self.failures)


class Traffic(BoundedLoad):
    """``clients`` threads, each with a keep-alive connection to nginx, sending GETs and POSTs
    until stopped (or ``limit`` requests, or ``deadline`` seconds: the load is always bounded).

    A POST carries random bytes (16 B to 512 KiB, so its digest is unique) and must be answered
    with their sha256 and length; a GET with ``ok``.  Every request carries a unique
    ``X-Request-Id``, which the app records when the request reaches it.  Some requests spend a few milliseconds in
    the app (``?ms=``), so there are requests in flight whenever a worker is signalled.  Anything
    else -- an exception, another status, a wrong body, a request over ``REQUEST_TIMEOUT`` -- is a
    failure, and the connection is replaced.
    """

    def __init__(self, url: str, *, clients: int = CLIENTS, limit: int = 50_000,
                 deadline: float = 60.0, seed: int = 0, every_post: set[str] | None = None) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.host, self.port = host, int(port)
        self.seed = seed
        self._done = 0
        self._busy = [False] * clients
        self.started = 0            # requests sent so far (answered or not)
        self.failures: dict[str, str] = {}
        self.posts: dict[str, bool] = {}
        # Digests of every POST body sent to this stack, across scenarios (a body the app
        # recorded that is not among them was altered on the way).
        self.every_post = every_post if every_post is not None else set()
        self.worst = 0.0
        super().__init__(threads=clients, limit=limit, deadline=deadline, name="traffic")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def done(self) -> int:
        with self._lock:
            return self._done

    def outstanding(self) -> tuple[int, int]:
        """Clients with a request sent and not yet answered, and requests sent so far."""
        with self._lock:
            return sum(self._busy), self.started

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        conn: http.client.HTTPConnection | None = None
        n = 0
        while self._take():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
            post = rng.random() < 0.5
            path = f"/load?ms={rng.choice((0, 0, 2, 10, 30))}"
            rid = f"{self.seed}-{index}-{n}"
            n += 1
            body = digest = None
            if post:
                size = rng.choice((rng.randint(16, 4096), rng.randint(16, 4096),
                                   rng.randint(4096, 65536), rng.randint(65536, 512 * 1024)))
                body = rng.randbytes(size)
                digest = hashlib.sha256(body).hexdigest()
                with self._lock:
                    self.posts[digest] = False
                    self.every_post.add(digest)
            error = None
            headers = {"X-Request-Id": rid}
            if post:
                headers["Content-Type"] = "application/octet-stream"
            with self._lock:
                self.started += 1
                self._busy[index] = True
            started = time.monotonic()
            try:
                conn.request("POST" if post else "GET", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    error = f"status {response.status}: {data[:120]!r}"
                elif post and not data.startswith(f"{digest} {len(body or b'')} ".encode()):
                    error = f"the app read another body: {data[:120]!r} (sent {len(body or b'')} B)"
                elif not post and not data.startswith(b"ok "):
                    error = f"unexpected answer {data[:120]!r}"
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                error = repr(exc)
            finally:
                self._busy[index] = False
            elapsed = time.monotonic() - started
            with self._lock:
                self._done += 1
                self.worst = max(self.worst, elapsed)
                if error is None and elapsed > REQUEST_TIMEOUT:
                    error = f"took {elapsed:.1f}s"
                if error is None:
                    if digest:
                        self.posts[digest] = True
                else:
                    self.failures[rid] = f"{'POST' if post else 'GET'} {path}: {error}"
            if error is not None:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def stop(self, timeout: float = REQUEST_TIMEOUT + 5) -> Outcome:
        self._halt(timeout)
        with self._lock:
            return Outcome(self._done, dict(self.failures), self.worst * 1000, dict(self.posts))


# ---- the stack ------------------------------------------------------------------------------


@dataclass
class Run:
    """One class's stack, and the master currently serving (it changes with the upgrade)."""

    name: str
    stack: Stack
    record_dir: Path
    master: int
    extra_masters: list[int] = field(default_factory=list)  # started by USR2, stopped by us
    every_post: set[str] = field(default_factory=set)       # digests of every POST body sent

    def traffic(self, seed: int) -> Traffic:
        return Traffic(self.url, seed=seed, every_post=self.every_post)

    @property
    def url(self) -> str:
        return self.stack.url

    def log(self) -> str:
        return self.stack.log("appserver.log")

    def tail(self, lines: int = 40) -> str:
        return "--- appserver.log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float = 15.0, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the log past offset ``after``."""
        regex = re.compile(pattern)
        match: re.Match[str] = wait_for(lambda: regex.search(self.log(), after), timeout,
                                        f"log line /{pattern}/", details=self.tail)
        return match

    def workers(self, master: int | None = None) -> list[int]:
        """Live, booted workers of ``master`` (default: the serving master)."""
        booted = {int(m.group(1)) for m in BOOTED.finditer(self.log())}
        return sorted(p for p in children(master or self.master) if p in booted and alive(p))

    def wait_workers(self, count: int, timeout: float = 15.0,
                     exclude: frozenset[int] = frozenset()) -> list[int]:
        def ready() -> list[int] | None:
            pids = self.workers()
            return pids if len(pids) == count and not exclude.intersection(pids) else None

        result: list[int] = wait_for(ready, timeout, f"{count} booted workers", details=self.tail)
        return result

    def signal(self, sig: int) -> None:
        os.kill(self.master, sig)

    def records(self) -> tuple[Counter[str], dict[str, set[int]]]:
        """From every worker's record file: how many times the app received each whole body,
        and which workers each request id reached."""
        bodies: Counter[str] = Counter()
        reached: dict[str, set[int]] = {}
        for path in self.record_dir.glob("requests-*.log"):
            pid = int(path.stem.removeprefix("requests-"))
            for line in path.read_text().splitlines():
                kind, value = line.split()[:2]
                if kind == "body":
                    bodies[value] += 1
                elif kind == "begin":
                    reached.setdefault(value, set()).add(pid)
        return bodies, reached

    def stop(self) -> Stopped:
        """Stop the masters an upgrade started (TERM, by PID, bounded), then the stack."""
        try:
            for pid in self.extra_masters:
                if alive(pid):
                    os.kill(pid, signal.SIGTERM)
            for pid in self.extra_masters:
                try:
                    wait_for(lambda pid=pid: not alive(pid), GRACEFUL_TIMEOUT + 5,
                             f"the upgraded master {pid} to exit", details=self.tail)
                except AssertionError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    raise
        finally:
            # The old master leads the process group the new one and its workers inherited, so
            # whatever is left of either is SIGKILLed here and reported as a StackError.
            stopped = self.stack.stop()
        return stopped


@pytest.fixture(scope="module", params=selected_classes())
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    name = request.param
    # Short: the unix socket's path must fit in 108 bytes.
    base = tmp_path_factory.mktemp(f"load-{name}", numbered=True)
    record_dir = base / "records"
    record_dir.mkdir()
    stack = start_stack(app_for(name, APP), directory=REPO, run_dir=base / "stack",
                        settings={"app": bundle_tables(name)["app"],
                                  "server": server_settings(name, record_dir),
                                  "nginx": {"websocket_locations": []}})
    current = Run(name, stack, record_dir, stack.pids["server"])
    try:
        current.wait_workers(WORKERS)
        yield current
    finally:
        stopped = current.stop()
    assert stopped.graceful, stopped


# ---- checks ---------------------------------------------------------------------------------


@dataclass
class Delivery:
    lost: int          # POST bodies sent that the app did not record exactly once
    lost_ok: int       # ... of them, ones the client got a correct answer for
    duplicated: int    # bodies recorded more than once
    foreign: int       # bodies recorded that no client sent (altered on the way)


def delivery(run: Run, outcome: Outcome) -> Delivery:
    seen, _ = run.records()
    lost = [d for d in outcome.posts if seen[d] != 1]
    return Delivery(lost=len(lost), lost_ok=sum(1 for d in lost if outcome.posts[d]),
                    duplicated=sum(1 for d in outcome.posts if seen[d] > 1),
                    foreign=len(set(seen) - run.every_post))


def record_row(reliability: Recorder, run: Run, scenario: str, outcome: Outcome,
               deliveries: Delivery, notes: str) -> None:
    reliability.record("load", scenario=scenario, **{
        "class": run.name, "sent": outcome.sent, "failed": outcome.failed,
        "lost": deliveries.lost, "worst latency (ms)": round(outcome.worst_ms, 1), "notes": notes})


def explain(outcome: Outcome, deliveries: Delivery, run: Run) -> str:
    failures = list(outcome.failures.items())[:8]
    return (f"{outcome.failed} of {outcome.sent} requests failed: {failures}\n"
            f"{deliveries}\nnginx said: {nginx_errors(run, 0)[-6:]}\n{run.tail()}")


BAD_LOG = ("Traceback", "crashed", "app error", "silent", "timed out", "graceful timeout")


def assert_clean_log(run: Run, offset: int) -> None:
    """No traceback, crash or timeout kill in the server's log past ``offset``."""
    text = run.log()[offset:]
    bad = [line for line in text.splitlines() if any(word in line for word in BAD_LOG)]
    assert not bad, "unexpected lines in the server log:\n" + text[-6000:]


def nginx_errors(run: Run, offset: int) -> list[str]:
    """nginx's error-level lines past ``offset``: an upstream connection that failed under a
    request shows here even when nginx retried it (a GET) and the client never saw it."""
    text = run.stack.log("nginx-error.log")[offset:]
    return [line for line in text.splitlines()
            if any(level in line for level in ("[error]", "[crit]", "[alert]", "[emerg]"))]


@dataclass
class IdleConnection:
    """A keep-alive connection straight to the server's socket, left idle after one request, as
    nginx leaves its cached upstream connections; ``holder`` is the worker that served it."""

    conn: http.client.HTTPConnection
    holder: int

    @classmethod
    def open(cls, run: Run) -> IdleConnection:
        conn = UnixHTTPConnection(run.stack.socket_path, timeout=REQUEST_TIMEOUT)
        reply = request(conn, "/load")
        assert reply.status == 200 and reply.body.startswith(b"ok "), reply
        return cls(conn, int(reply.body.split()[1]))

    def assert_closed_quietly(self, timeout: float = GRACEFUL_TIMEOUT + 5) -> None:
        """Once its worker has retired, the server has closed the connection (EOF)."""
        try:
            if self.conn.sock is not None:   # None: the answer said Connection: close (sync)
                self.conn.sock.settimeout(timeout)
                assert self.conn.sock.recv(1) == b"", "the idle connection got bytes"
        finally:
            self.conn.close()


def reloads_so_far(run: Run) -> int:
    return max([1, *(int(g) for g in re.findall(r"reloaded: generation (\d+) serves", run.log()))])


# ---- the scenarios --------------------------------------------------------------------------


def test_reload_storm(run: Run, reliability: Recorder) -> None:
    """HUP every ~1.5 s under load, a TTIN after the first reload and a TTOU after the second:
    no request fails, every POST body arrives whole exactly once."""
    run.wait_workers(WORKERS)
    generation = reloads_so_far(run)
    log_start = len(run.log())
    nginx_start = len(run.stack.log("nginx-error.log"))
    idle = IdleConnection.open(run)
    with run.traffic(seed=1) as traffic:
        traffic.wait_done(30)
        for i in range(HUPS):
            started = time.monotonic()
            old = set(run.workers())
            offset = len(run.log())
            run.signal(signal.SIGHUP)
            generation += 1
            run.wait_log(rf"reloaded: generation {generation} serves", after=offset)
            # The old workers retire in the background (idle connections after ~2 s); the
            # storm goes on meanwhile.
            if i == 0:
                run.signal(signal.SIGTTIN)       # 2 -> 3 workers
                wait_for(lambda old=old: len(set(run.workers()) - old) == WORKERS + 1, 15,
                         "the TTIN worker to boot", details=run.tail)
            elif i == 1:
                offset = len(run.log())
                run.signal(signal.SIGTTOU)       # 2 -> 1: a worker retires under load
                run.wait_log(r"workers: 1\b", after=offset)
            traffic.wait_done(20)
            time.sleep(max(0.0, HUP_INTERVAL - (time.monotonic() - started)))
        final = run.wait_workers(WORKERS, timeout=GRACEFUL_TIMEOUT + 10)
        wait_for(lambda: set(run.workers()) == set(final) and len(children(run.master)) == WORKERS,
                 GRACEFUL_TIMEOUT + 10, "the retired workers to exit", details=run.tail)
        traffic.wait_done(30)
        outcome = traffic.stop()
    deliveries = delivery(run, outcome)
    record_row(reliability, run, "reload storm: HUP every 1.5 s, TTIN/TTOU", outcome, deliveries,
               f"{HUPS} HUPs (generations {generation - HUPS + 1}-{generation}), a TTIN and a "
               f"TTOU between them, an idle upstream connection on a retiring worker; "
               f"{len(outcome.posts)} POST bodies checked")
    assert outcome.failed == 0, explain(outcome, deliveries, run)
    assert deliveries == Delivery(0, 0, 0, 0), explain(outcome, deliveries, run)
    idle.assert_closed_quietly()
    assert not alive(idle.holder)
    assert_clean_log(run, log_start)
    assert "killed" not in run.log()[log_start:], run.tail()
    assert not nginx_errors(run, nginx_start)


def test_kill_workers(run: Run, reliability: Recorder) -> None:
    """SIGKILL a random worker every ~1 s under load: only requests in flight on it may fail;
    every answered POST was received whole exactly once, no body twice.

    What was in flight on a killed worker is bounded from the client side: the requests
    outstanding when the signal was sent plus those sent before the worker was gone (its sockets
    closed), and at most one on the sync class.  Each failed request is then traced through the
    app's record: it may have reached a killed worker, or no worker at all (nginx had passed it
    to the killed worker, which died before the app saw it), never a worker that lived on.
    """
    run.wait_workers(WORKERS)
    per_worker = 1 if run.name == "sync" else CLIENTS  # sync serves one request at a time
    rng = random.Random(2)
    log_start = len(run.log())
    bound = 0
    killed: list[int] = []
    with run.traffic(seed=2) as traffic:
        traffic.wait_done(30)
        for _ in range(KILLS):
            time.sleep(0.5)
            victim = rng.choice(run.workers())
            outstanding, sent_before = traffic.outstanding()
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_for(lambda victim=victim: not alive(victim), 5, f"worker {victim} to die")
            sent_since = traffic.outstanding()[1] - sent_before
            bound += min(outstanding + sent_since, per_worker)
            run.wait_log(rf"worker {victim} was killed by SIGKILL, not by the master")
            run.wait_workers(WORKERS, exclude=frozenset(killed))
            traffic.wait_done(30)
        traffic.wait_done(30)
        outcome = traffic.stop()
    deliveries = delivery(run, outcome)
    _, reached = run.records()
    in_app = [rid for rid in outcome.failures if reached.get(rid, set()) & set(killed)]
    elsewhere = {rid: sorted(reached[rid]) for rid in outcome.failures
                 if reached.get(rid) and not reached[rid] & set(killed)}
    record_row(reliability, run, "kill -9 of random workers", outcome, deliveries,
               f"{KILLS} workers killed with at most {bound} requests in flight on them; "
               f"{outcome.failed} failed ({len(in_app)} inside the app on a killed worker, "
               f"{outcome.failed - len(in_app) - len(elsewhere)} passed to one before the app "
               f"had them, {len(elsewhere)} elsewhere); {deliveries.lost} of "
               f"{len(outcome.posts)} POST bodies lost, all of them failed requests")
    assert not elsewhere, f"failed requests served by workers that were not killed: {elsewhere}\n" \
        + explain(outcome, deliveries, run)
    assert outcome.failed <= bound, explain(outcome, deliveries, run)
    # A failed POST may not have reached the app (lost); an answered one must have, exactly once.
    assert deliveries.lost_ok == 0 and deliveries.duplicated == 0 and deliveries.foreign == 0, \
        explain(outcome, deliveries, run)
    assert deliveries.lost <= outcome.failed, explain(outcome, deliveries, run)
    assert_clean_log(run, log_start)


def test_usr2_upgrade(run: Run, reliability: Recorder) -> None:
    """USR2 under load, then WINCH and TERM to the old master: no request fails or is lost."""
    old_master = run.master
    old_workers = run.wait_workers(WORKERS)
    log_start = len(run.log())
    nginx_start = len(run.stack.log("nginx-error.log"))
    idle = IdleConnection.open(run)
    with run.traffic(seed=3) as traffic:
        traffic.wait_done(30)
        offset = len(run.log())
        run.signal(signal.SIGUSR2)
        new_master = int(run.wait_log(NEW_MASTER.pattern, after=offset).group(1))
        run.extra_masters.append(new_master)
        wait_for(lambda: len(run.workers(new_master)) == WORKERS, 20,
                 "the new master's workers to boot", details=run.tail)
        traffic.wait_done(30)
        run.signal(signal.SIGWINCH)
        wait_for(lambda: not any(alive(p) for p in old_workers), GRACEFUL_TIMEOUT + 10,
                 "the old workers to retire", details=run.tail)
        traffic.wait_done(30)
        run.signal(signal.SIGTERM)
        server = run.stack.local.server
        assert server is not None
        assert server.wait(timeout=GRACEFUL_TIMEOUT + 5) == 0, run.tail()
        run.master = new_master
        traffic.wait_done(30)
        outcome = traffic.stop()
    deliveries = delivery(run, outcome)
    record_row(reliability, run, "USR2 upgrade, WINCH, TERM", outcome, deliveries,
               f"master {old_master} replaced by {new_master} under load, an idle upstream "
               f"connection on an old worker; {len(outcome.posts)} POST bodies checked")
    assert outcome.failed == 0, explain(outcome, deliveries, run)
    assert deliveries == Delivery(0, 0, 0, 0), explain(outcome, deliveries, run)
    idle.assert_closed_quietly()
    assert idle.holder in old_workers
    assert_clean_log(run, log_start)
    assert not nginx_errors(run, nginx_start)
    assert run.workers(new_master), "the new master has no workers"
    assert alive(new_master)
