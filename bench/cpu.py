"""Where the CPU went during a measurement: the server, nginx, wrk, and everything else.

Why: the benchmark shares 2 cores between wrk, nginx and the server, and the machine itself is
often shared (other engineers' test suites).  Two numbers make a run interpretable despite that:

* requests per CPU-second of the server (its workers and master): the server's efficiency,
  far less sensitive to a busy neighbour than req/s, since it counts only time the server ran;
* the cores used by processes that are not part of the benchmark while it measured: a run with
  a noisy neighbour shows up here instead of silently lowering req/s.

Design note: a process counts for the server or nginx when it is that process or descends from
it (parent links from ``/proc/<pid>/stat``, so a worker that calls setsid still counts).  wrk
is a child reaped before the closing sample, so its time is in this process's children times.
Resolution is one clock tick (10 ms).  A process that exits inside the window is counted through
its parent's children times once reaped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    machine_busy: float          # seconds, all CPUs, from /proc/stat
    trees: dict[int, float]      # seconds per process tree of interest, keyed by root PID
    bench: float                 # this process and its reaped children (wrk)
    wall: float                  # seconds, monotonic


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used in one measurement window, and the cores used by everyone else."""

    server_s: float
    nginx_s: float
    wrk_and_bench_s: float
    other_cores: float
    clients_s: float = 0.0       # load generators still running at the end (bench/ws.py)


def sample(server_pid: int, nginx_pid: int, clients: tuple[int, ...] = ()) -> CpuSample:
    """``clients``: PIDs of load generators that are not reaped before the closing sample."""
    times = os.times()
    return CpuSample(_machine_busy(), _tree_seconds((server_pid, nginx_pid, *clients)),
                     times.user + times.system + times.children_user + times.children_system,
                     times.elapsed)


def between(start: CpuSample, end: CpuSample, server_pid: int, nginx_pid: int,
            clients: tuple[int, ...] = ()) -> CpuUse:
    def tree(pid: int) -> float:
        return max(0.0, end.trees.get(pid, 0.0) - start.trees.get(pid, 0.0))

    server, nginx = tree(server_pid), tree(nginx_pid)
    client_s = sum(tree(pid) for pid in clients)
    bench = end.bench - start.bench
    wall = end.wall - start.wall
    other = end.machine_busy - start.machine_busy - server - nginx - bench - client_s
    return CpuUse(server, nginx, bench, max(0.0, other / wall) if wall > 0 else 0.0, client_s)


def _machine_busy() -> float:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest is in user).
    # Interrupt time is left out: it is charged to no process, and most of it here is the
    # loopback traffic of the benchmark itself (1.3 GB/s in the 1 MiB scenario), which would
    # otherwise show up as a neighbour's load.  Steal time stays in: it is interference.
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system + steal) / _TICK


def _tree_seconds(roots: tuple[int, ...]) -> dict[int, float]:
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Fields after the command name, which may itself contain spaces and parentheses.
        rest = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        # utime + stime, plus cutime + cstime: the time of children this process has reaped,
        # so a worker recycled during the window (max-requests) still counts, in its master.
        parent[pid] = int(rest[1])
        ticks[pid] = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    totals = dict.fromkeys(roots, 0.0)
    for pid, count in ticks.items():
        ancestor, hops = pid, 0
        while ancestor > 1 and ancestor not in totals and hops < 64:
            ancestor, hops = parent.get(ancestor, 0), hops + 1
        if ancestor in totals:
            totals[ancestor] += count / _TICK
    return totals


def machine_load(seconds: float = 1.0) -> float:
    """Cores busy over the next ``seconds`` (used before the run, when nothing of ours works)."""
    start, started = _machine_busy(), time.monotonic()
    time.sleep(seconds)
    return (_machine_busy() - start) / (time.monotonic() - started)
