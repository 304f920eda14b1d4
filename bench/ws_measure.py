"""One run of one server in the WebSocket benchmark (bench/ws.py): start it, load it, stop it.

* :func:`echo_run`: the echo load through nginx, from separate client processes
  (``python -m bench.wsclient echo``), with the CPU of the server, nginx and the clients sampled
  at the instants the clients start and stop counting (an absolute CLOCK_MONOTONIC time given
  to them on their command line).
* :func:`idle_run`: idle WebSockets opened by this process straight on the server's unix socket,
  in steps; after each, the worker's RSS, threads and descriptors from ``/proc``.

Every process is started through :mod:`bench.procs` (own session, bounded stop by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import cpu, procs, wsclient
from bench.matrix import Scenario
from bench.nginx import WS_PATH, Nginx
from bench.report import StopResult
from bench.serve import ServerError, server_env, stop_server, wait_ready

# The readiness check every server must pass first: a plain GET through nginx.
READY = Scenario("ws", "", 1, "readiness", expect_body=b"Hello, world!\n")
WARMUP_CONNECTIONS = 20
CLIENT_START_ALLOWANCE_S = 2.5   # client processes import, connect and handshake in this time
_RUN_NUMBERS = itertools.count(1)


class Started:
    """One server of one run, started and known to answer through nginx."""

    def __init__(self, label: str, argv: list[str], nginx: Nginx, log_path: Path,
                 cwd: Path, start_timeout: float, *, has_master: bool) -> None:
        nginx.app_socket.unlink(missing_ok=True)
        with open(log_path, "a") as fh:
            fh.write(f"$ {' '.join(argv)}\n")
        self.log_path = log_path
        self.proc = procs.ManagedProcess(label, argv, log_path=log_path, cwd=cwd,
                                         env=server_env(cwd))
        try:
            wait_ready(READY, self.proc, nginx, start_timeout)
        except ServerError:
            self.stop()
            raise
        self.worker_pid = self._worker_pid(has_master, start_timeout)

    def _worker_pid(self, has_master: bool, timeout: float) -> int:
        """The one worker's PID: the master's only child, or the process itself."""
        if not has_master:
            return self.proc.pid
        found: list[int] = []

        def look() -> bool:
            found[:] = procs.children(self.proc.pid)
            return bool(found)

        procs.wait_until(look, timeout)
        if len(found) != 1:
            self.stop()
            raise ServerError(f"expected one worker process, found {found}")
        return found[0]

    def check_alive(self) -> None:
        if not self.proc.alive():
            raise ServerError(f"server exited ({self.proc.popen.returncode}):\n"
                              f"{self.proc.log_tail()}")

    def stop(self) -> StopResult:
        return stop_server(self.proc, self.log_path)


# ---------------------------------------------------------------------------------------------
# Echo.


@dataclass
class EchoRun:
    result: wsclient.EchoResult
    cpu: cpu.CpuUse
    window_s: float
    nginx_statuses: dict[str, int]   # statuses other than 101 (the upgrades themselves)
    upstream_errors: int
    stop: StopResult | None = None

    @property
    def per_cpu_s(self) -> float | None:
        return self.result.round_trips / self.cpu.server_s if self.cpu.server_s >= 0.5 else None

    @property
    def client_cores(self) -> float:
        return self.cpu.clients_s / self.window_s


def echo_run(name: str, argv: list[str], nginx: Nginx, args: argparse.Namespace,
             log_dir: Path, cwd: Path, *, has_master: bool) -> EchoRun:
    started = Started(name, argv, nginx, log_dir / f"echo-{name}.log", cwd,
                      args.start_timeout, has_master=has_master)
    stop: StopResult | None = None
    clients: list[procs.ManagedProcess] = []
    try:
        assert nginx.proc is not None
        mark = nginx.mark()
        start_at = time.monotonic() + CLIENT_START_ALLOWANCE_S + args.warmup
        run_no = next(_RUN_NUMBERS)  # each run's clients write their own logs
        shares = [args.clients // args.client_procs + (i < args.clients % args.client_procs)
                  for i in range(args.client_procs)]
        for i, share in enumerate(shares):
            client_argv = [sys.executable, "-m", "bench.wsclient", "echo",
                           "--target", f"tcp:127.0.0.1:{nginx.port}", "--path", WS_PATH,
                           "--clients", str(share), "--size", str(args.size),
                           "--start-at", repr(start_at), "--duration", str(args.duration)]
            clients.append(procs.ManagedProcess(
                f"wsclient-{i}", client_argv, log_path=log_dir / f"wsclient-{name}-{run_no}-{i}.log",
                cwd=cwd, env=server_env(cwd)))
        pids = tuple(c.pid for c in clients)
        _sleep_until(start_at)
        cpu_start = cpu.sample(started.proc.pid, nginx.proc.pid, pids)
        _sleep_until(start_at + args.duration)
        cpu_use = cpu.between(cpu_start, cpu.sample(started.proc.pid, nginx.proc.pid, pids),
                              started.proc.pid, nginx.proc.pid, pids)
        results = [_client_result(c, args.duration) for c in clients]
        started.check_alive()
        time.sleep(0.5)  # nginx logs an upgraded connection when it ends
        window = nginx.window(mark)
        statuses = {k: v for k, v in window.statuses.items() if k != "101"}
        run = EchoRun(wsclient.combine(results), cpu_use, args.duration, statuses,
                      window.upstream_errors)
    finally:
        for client in clients:
            client.stop(timeout=5.0)
        stop = started.stop()
    run.stop = stop
    return run


def _client_result(client: procs.ManagedProcess, duration: float) -> wsclient.EchoResult:
    try:
        client.popen.wait(duration + 30)
    except Exception:
        raise ServerError(f"the echo client did not finish:\n{client.log_tail()}") from None
    for line in client.log_path.read_text(errors="replace").splitlines():
        if line.startswith(wsclient.RESULT_MARKER):
            return wsclient.EchoResult(**json.loads(line[len(wsclient.RESULT_MARKER):]))
    raise ServerError(f"the echo client failed (status {client.popen.returncode}):\n"
                      f"{client.log_tail()}")


def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# ---------------------------------------------------------------------------------------------
# Idle connections.


@dataclass
class ProcMemory:
    rss_kib: int
    threads: int
    fds: int


def proc_memory(pid: int) -> ProcMemory:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return ProcMemory(int(fields["VmRSS"].split()[0]), int(fields["Threads"]), fds)


@dataclass
class IdleStep:
    target: int            # connections asked for at this step
    opened: int            # connections open after it (each answered one echo)
    open_s: float          # time to open this step's new connections
    memory: ProcMemory
    errors: dict[str, int]

    def kib_per_conn(self, base: ProcMemory) -> float | None:
        return (self.memory.rss_kib - base.rss_kib) / self.opened if self.opened else None


@dataclass
class IdleRun:
    base: ProcMemory
    steps: list[IdleStep]
    hold_s: float = 0.0
    hold_server_cores: float = 0.0   # the server's CPU use while the connections sat idle
    alive_after_hold: int = 0
    log_excerpt: str = ""
    stop: StopResult | None = None


def idle_run(name: str, argv: list[str], nginx: Nginx, args: argparse.Namespace,
             log_dir: Path, cwd: Path, *, has_master: bool) -> IdleRun:
    log_path = log_dir / f"idle-{name}.log"
    started = Started(name, argv, nginx, log_path, cwd, args.start_timeout,
                      has_master=has_master)
    loop = wsclient.new_loop()
    held: list[wsclient.Client] = []
    try:
        run = loop.run_until_complete(_idle(started, nginx, args, held))
        run.log_excerpt = _interesting_lines(log_path)
    finally:
        wsclient.close_all(held)
        loop.run_until_complete(asyncio.sleep(0.5))  # let the aborts reach the server
        loop.close()
        stop = started.stop()
    run.stop = stop
    return run


async def _idle(started: Started, nginx: Nginx, args: argparse.Namespace,
                held: list[wsclient.Client]) -> IdleRun:
    target = ("unix", str(nginx.app_socket))
    warm: list[wsclient.Client] = []
    await wsclient.open_idle(target, WS_PATH, WARMUP_CONNECTIONS, into=warm)
    wsclient.close_all(warm)
    await asyncio.sleep(1.0)
    run = IdleRun(proc_memory(started.worker_pid), [])
    for count in args.idle_counts:
        opened = await wsclient.open_idle(target, WS_PATH, count - len(held), into=held,
                                          timeout=args.open_timeout)
        held[:] = [c for c in held if c.error is None]
        await asyncio.sleep(1.0)
        started.check_alive()
        run.steps.append(IdleStep(count, len(held), opened.seconds,
                                  proc_memory(started.worker_pid), opened.errors))
        print(f"  {len(held):,} open: RSS {run.steps[-1].memory.rss_kib / 1024:,.1f} MiB, "
              f"{run.steps[-1].memory.threads} threads, {run.steps[-1].memory.fds} fds"
              + (f"; errors {opened.errors}" if opened.errors else ""), flush=True)
        if opened.errors or len(held) < count:
            break
    assert nginx.proc is not None
    cpu_start = cpu.sample(started.proc.pid, nginx.proc.pid)
    await asyncio.sleep(args.hold)
    cpu_use = cpu.between(cpu_start, cpu.sample(started.proc.pid, nginx.proc.pid),
                          started.proc.pid, nginx.proc.pid)
    run.hold_s = args.hold
    run.hold_server_cores = cpu_use.server_s / args.hold
    run.alive_after_hold = await wsclient.sweep(held)
    started.check_alive()
    return run


def _interesting_lines(log_path: Path, limit: int = 8) -> str:
    """The first warnings and errors a server logged (a refusal, EMFILE, a traceback)."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines()
             if any(word in line for word in ("ERROR", "WARNING", "Error", "error", "refused"))]
    return "\n".join(lines[:limit])


