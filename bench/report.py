"""Summaries of the measurements: the console table, and the JSON and markdown result files.

Per cell, throughput and latency are the median over its runs (each median taken on its own
metric), while failure counts are totals over all runs: a single 502 is a finding, and a median
would hide it.
"""

from __future__ import annotations

import json
import signal
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import CpuUse
from bench.matrix import GUNICORN, IMPLEMENTATIONS, OURS, Cell
from bench.nginx import LogWindow
from bench.wrk import WrkResult

MIN_CPU_S_FOR_EFFICIENCY = 0.5  # 50 clock ticks: a 2% resolution
# Cores used by other processes above which a run counts as disturbed: with 2 cores shared by
# wrk, nginx and the server, a quarter core taken elsewhere already moves req/s by several %.
DISTURBED_OTHER_CORES = 0.25


# Seconds a server gets to stop after SIGTERM before its process group is SIGKILLed.  After a
# measurement no request is in flight, so a graceful stop should take well under this.
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class StopResult:
    seconds: float
    status: int | None  # exit status; None if even SIGKILL did not end it in time
    left_orphans: bool = False  # descendants outlived it (and were killed)

    @property
    def killed(self) -> bool:
        return self.status is None or self.status == -signal.SIGKILL


@dataclass
class Run:
    wrk: WrkResult
    logs: LogWindow
    cpu: CpuUse
    stop: StopResult | None = None  # filled in once the server has been stopped

    @property
    def requests_per_cpu_s(self) -> float | None:
        """Requests per CPU-second of the server: its efficiency, robust to a busy machine.

        None when the server used too little CPU for the 10 ms clock tick to measure it well
        (the 50 ms app mostly waits).
        """
        if self.cpu.server_s < MIN_CPU_S_FOR_EFFICIENCY:
            return None
        return self.wrk.requests / self.cpu.server_s


@dataclass
class CellResult:
    cell: Cell
    runs: list[Run] = field(default_factory=list)
    error: str | None = None  # why the cell could not be measured (server did not start, ...)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)

    def median(self, metric: str) -> float:
        return statistics.median(float(getattr(run.wrk, metric)) for run in self.runs)

    @property
    def efficiency(self) -> float | None:
        values = [v for run in self.runs if (v := run.requests_per_cpu_s) is not None]
        return statistics.median(values) if values else None

    @property
    def other_cores(self) -> float:
        """The worst interference seen in any run: cores used by processes not ours."""
        return max(run.cpu.other_cores for run in self.runs)

    def total(self, metric: str) -> int:
        return sum(int(getattr(run.logs, metric)) for run in self.runs)

    @property
    def socket_errors(self) -> int:
        return sum(run.wrk.socket_errors for run in self.runs)


def ratio(result: CellResult, results: dict[str, CellResult], *,
          efficiency: bool = False, base_key: str | None = None) -> float | None:
    """This cell's median req/s (or req/CPU-s) over gunicorn's (or ``base_key``'s) for the
    same scenario and class."""
    base = results.get(base_key or result.cell.baseline_key)
    if not (result.ok and base is not None and base.ok):
        return None

    def value(r: CellResult) -> float | None:
        return r.efficiency if efficiency else r.median("rps")

    mine, theirs = value(result), value(base)
    return mine / theirs if mine is not None and theirs else None


_COLUMNS = ("scenario", "class", "server", "req/s", "p50 ms", "p99 ms", "non-2xx", "502/504",
            "upstream err", "sock err", "req/cpu-s", "other cpu", "vs gunicorn", "cpu vs g")


def rows(results: dict[str, CellResult]) -> list[list[str]]:
    table = []
    for result in results.values():
        cell = result.cell
        head = [cell.scenario.name, cell.server_class.name, cell.impl]
        if not result.ok:
            first_line = (result.error or "no runs").splitlines()[0]
            table.append(head + [f"FAILED: {first_line}"])
            continue
        r = ratio(result, results)
        r_cpu = ratio(result, results, efficiency=True)
        table.append(head + [
            f"{result.median('rps'):,.0f}",
            f"{result.median('p50_us') / 1000:.2f}",
            f"{result.median('p99_us') / 1000:.2f}",
            str(result.total("non_2xx")),
            str(result.total("bad_gateway")),
            str(result.total("upstream_errors")),
            str(result.socket_errors),
            format_number(result.efficiency),
            f"{result.other_cores:.2f}",
            f"{r:.2f}x" if r is not None else "-",
            f"{r_cpu:.2f}x" if r_cpu is not None else "-",
        ])
    return table


def peer_ratios(results: dict[str, CellResult]) -> list[tuple[str, str, float | None,
                                                              float | None]]:
    """Ours against every peer besides gunicorn: the class's own peers (``asgi``: uvicorn,
    granian) and those of its ``peer_classes`` (WSGI classes: the ``wsgi-peers`` and
    ``wsgi-peers-32t`` cells of the same scenario, shared by all of them).

    Rows of (our cell key, peer, req/s ratio, req/CPU-s ratio); above 1 means ours is faster or
    cheaper.  A peer of another class is named ``CLASS/IMPL`` (``wsgi-peers/uwsgi``).  The
    gunicorn ratios repeat the table's columns, so that one block compares all.
    A cell with no peer but gunicorn in the run has no rows.
    """
    found = []
    for key, result in results.items():
        cell = result.cell
        if cell.impl != OURS:
            continue
        own = cell.server_class.name
        peer_keys = [(peer if name == own else f"{name}/{peer}",
                      f"{cell.scenario.name}/{name}/{peer}")
                     for name in (own, *cell.server_class.peer_classes)
                     for peer in IMPLEMENTATIONS if peer != OURS]
        # gunicorn last, as in the table, after the native peers.
        present = sorted(((peer, k) for peer, k in peer_keys if k in results),
                         key=lambda pair: pair[0] == GUNICORN)
        if all(peer == GUNICORN for peer, _ in present):
            continue
        found += [(key, peer, ratio(result, results, base_key=peer_key),
                   ratio(result, results, efficiency=True, base_key=peer_key))
                  for peer, peer_key in present]
    return found


def peer_lines(results: dict[str, CellResult]) -> list[str]:
    """The peer ratios as text: one line per (our cell, peer)."""
    found = peer_ratios(results)
    if not found:
        return []
    lines = ["ours vs each peer, same run (req/s ratio, req/cpu-s ratio; above 1: ours better):"]
    for key, peer, r, r_cpu in found:
        lines.append(f"  {key:<20} vs {peer:<27} req/s {_x(r):>6}   req/cpu-s {_x(r_cpu):>6}")
    return lines


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def text_table(results: dict[str, CellResult]) -> str:
    table = rows(results)
    widths = [len(c) for c in _COLUMNS]
    for row in table:
        if len(row) == len(_COLUMNS):
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    numeric = set(range(3, len(_COLUMNS)))

    def fmt(row: list[str]) -> str:
        if len(row) != len(_COLUMNS):  # a failed cell: its message runs across the columns
            return "  ".join(v.ljust(w) for v, w in zip(row[:3], widths, strict=False)) + \
                "  " + row[3]
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                         for i, (v, w) in enumerate(zip(row, widths, strict=True)))

    lines = [fmt(list(_COLUMNS)), "  ".join("-" * w for w in widths)]
    previous = None
    for row in table:
        if previous is not None and row[0] != previous:
            lines.append("")
        previous = row[0]
        lines.append(fmt(row))
    peers = peer_lines(results)
    if peers:
        lines += [""] + peers
    found = notes(results)
    return "\n".join(lines + [""] + found if found else lines)


def notes(results: dict[str, CellResult]) -> list[str]:
    """Findings the table has no column for: disturbed runs, servers that would not stop."""
    found = []
    runs = [run for result in results.values() for run in result.runs]
    disturbed = sum(run.cpu.other_cores > DISTURBED_OTHER_CORES for run in runs)
    if disturbed:
        found.append(f"note: in {disturbed} of {len(runs)} runs other processes used more than "
                     f"{DISTURBED_OTHER_CORES} cores ('other cpu'): req/s ratios are unreliable "
                     "there; compare 'cpu vs g', or rerun on a quiet machine.")
    for key, result in results.items():
        killed = sum(run.stop is not None and run.stop.killed for run in result.runs)
        if killed:
            found.append(f"note: {key} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM "
                         f"in {killed} of {len(result.runs)} runs and was killed.")
        orphaned = sum(run.stop is not None and run.stop.left_orphans for run in result.runs)
        if orphaned:
            found.append(f"note: {key} exited but left processes behind in {orphaned} of "
                         f"{len(result.runs)} runs (killed by the benchmark).")
    return found


def markdown(results: dict[str, CellResult], meta: dict[str, Any]) -> str:
    out = [f"# Benchmark {meta['started']}", ""]
    out += [f"- {key}: {value}" for key, value in meta.items() if key != "commands"]
    out += [f"- command ({impl}): `{cmd}`" for impl, cmd in meta["commands"].items()]
    out += ["", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows(results):
        row = row + [""] * (len(_COLUMNS) - len(row))
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in row) + " |")
    peers = peer_ratios(results)
    if peers:
        out += ["", "## Ours vs each peer (same run; above 1: ours better)", "",
                "| cell | peer | req/s ratio | req/cpu-s ratio |", "|---|---|---|---|"]
        out += [f"| {key} | {peer} | {_x(r)} | {_x(r_cpu)} |" for key, peer, r, r_cpu in peers]
    found = notes(results)
    if found:
        out += [""] + [f"- {line.removeprefix('note: ')}" for line in found]
    kinds = _error_kinds(results)
    if kinds:
        out += ["", "## nginx upstream errors by kind", ""]
        out += [f"- {key}: {count} x {kind}" for key, kind, count in kinds]
    return "\n".join(out) + "\n"


def as_json(results: dict[str, CellResult], meta: dict[str, Any]) -> dict[str, Any]:
    cells = []
    by_cell: dict[str, dict[str, Any]] = {}
    for key, peer, r_peer, r_peer_cpu in peer_ratios(results):
        by_cell.setdefault(key, {})[peer] = {"rps": r_peer, "cpu_efficiency": r_peer_cpu}
    for key, result in results.items():
        r = ratio(result, results)
        cells.append({
            "key": key,
            "scenario": result.cell.scenario.name,
            "class": result.cell.server_class.name,
            "server": result.cell.impl,
            "error": result.error,
            "median": None if not result.ok else {
                "rps": result.median("rps"),
                "p50_ms": result.median("p50_us") / 1000,
                "p99_ms": result.median("p99_us") / 1000,
                "requests_per_server_cpu_s": result.efficiency,
            },
            "totals": None if not result.ok else {
                "non_2xx": result.total("non_2xx"),
                "bad_gateway": result.total("bad_gateway"),
                "upstream_errors": result.total("upstream_errors"),
                "client_closed_499": result.total("client_closed"),
                "socket_errors": result.socket_errors,
            },
            "max_other_cores": result.other_cores if result.ok else None,
            "ratio_to_gunicorn": r,
            "cpu_efficiency_ratio_to_gunicorn": ratio(result, results, efficiency=True),
            "ratios_to_peers": by_cell.get(key),
            "runs": [{"wrk": asdict(run.wrk), "rps": run.wrk.rps,
                      "requests_per_server_cpu_s": run.requests_per_cpu_s,
                      "nginx": asdict(run.logs),
                      "cpu": asdict(run.cpu),
                      "stop": None if run.stop is None else {
                          "seconds": run.stop.seconds, "status": run.stop.status,
                          "killed": run.stop.killed, "left_orphans": run.stop.left_orphans}}
                     for run in result.runs],
        })
    return {"meta": meta, "cells": cells}


def write_results(results: dict[str, CellResult], meta: dict[str, Any],
                  directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = meta["started"].replace(":", "").replace("-", "")
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(as_json(results, meta), indent=2) + "\n")
    md_path.write_text(markdown(results, meta))
    return json_path, md_path


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _error_kinds(results: dict[str, CellResult]) -> list[tuple[str, str, int]]:
    found = []
    for key, result in results.items():
        totals: dict[str, int] = {}
        for run in result.runs:
            for kind, count in run.logs.error_kinds.items():
                totals[kind] = totals.get(kind, 0) + count
        found += [(key, kind, count) for kind, count in totals.items()]
    return found
