"""Summaries of the WebSocket benchmark: console tables and the JSON and markdown result files.

Echo: per server, medians over the runs (each metric on its own), failure counts added up, and
ratios to uvicorn's medians.  Idle: one row per step, memory per connection against the baseline
taken before the first step, and its ratio to uvicorn's at the same step.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.report import DISTURBED_OTHER_CORES
from bench.ws_measure import EchoRun, IdleRun, IdleStep

BASELINE = "uvicorn"
# A client process busier than this may be what limits the rate, not the server.
CLIENT_SATURATED_CORES = 0.85


@dataclass
class EchoCell:
    label: str
    runs: list[EchoRun] = field(default_factory=list)
    error: str | None = None
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.runs)

    def median(self, value: Any) -> float | None:
        values = [v for run in self.runs if (v := value(run)) is not None]
        return statistics.median(values) if values else None

    @property
    def rate(self) -> float:
        return self.median(lambda r: r.result.rate) or 0.0

    @property
    def efficiency(self) -> float | None:
        return self.median(lambda r: r.per_cpu_s)

    @property
    def failures(self) -> int:
        return sum(r.result.errors + sum(r.nginx_statuses.values()) + r.upstream_errors
                   for r in self.runs)


@dataclass
class IdleCell:
    label: str
    run: IdleRun | None = None
    error: str | None = None
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.run is not None


@dataclass
class Results:
    echo: list[EchoCell]
    idle: list[IdleCell]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.echo) and all(c.ok for c in self.idle)


def echo_line(run: EchoRun) -> str:
    r = run.result
    eff = run.per_cpu_s
    return (f"{r.rate:,.0f} round trips/s, p99 {r.p99_ms:.2f} ms, {r.errors} client errors, "
            f"{sum(run.nginx_statuses.values())} non-101, {run.upstream_errors} upstream errors, "
            f"{'-' if eff is None else f'{eff:,.0f}'} per cpu-s, client {run.client_cores:.2f} "
            f"cores, other cpu {run.cpu.other_cores:.2f}; stopped in "
            f"{run.stop.seconds if run.stop else 0:.1f}s")


def idle_line(run: IdleRun) -> str:
    last = run.steps[-1] if run.steps else None
    if last is None:
        return "no step completed"
    per = last.kib_per_conn(run.base)
    return (f"{last.opened:,} held, {per:.1f} KiB/conn, {run.alive_after_hold:,} alive after "
            f"{run.hold_s:.0f}s hold, server {run.hold_server_cores:.3f} cores while idle")


_ECHO_COLUMNS = ("server", "round trips/s", "p50 ms", "p99 ms", "failures", "per cpu-s",
                 "client cores", "nginx cores", "other cpu", "vs uvicorn", "cpu vs uvicorn")
_IDLE_COLUMNS = ("server", "target", "open", "open s", "RSS MiB", "KiB/conn", "threads", "fds",
                 "vs uvicorn", "alive after hold", "idle cores", "stop s")


def echo_rows(cells: list[EchoCell]) -> list[list[str]]:
    base = next((c for c in cells if c.label == BASELINE and c.ok), None)
    rows = []
    for cell in cells:
        if not cell.ok:
            rows.append([cell.label, f"FAILED: {(cell.error or 'no runs').splitlines()[0]}"])
            continue
        eff = cell.efficiency
        ratio = cell.rate / base.rate if base and base.rate else None
        base_eff = base.efficiency if base else None
        cpu_ratio = eff / base_eff if eff is not None and base_eff else None
        rows.append([
            cell.label, f"{cell.rate:,.0f}",
            f"{cell.median(lambda r: r.result.p50_ms):.2f}",
            f"{cell.median(lambda r: r.result.p99_ms):.2f}",
            str(cell.failures), _num(eff),
            f"{cell.median(lambda r: r.client_cores):.2f}",
            f"{cell.median(lambda r: r.cpu.nginx_s / r.window_s):.2f}",
            f"{max(r.cpu.other_cores for r in cell.runs):.2f}",
            _ratio(ratio), _ratio(cpu_ratio),
        ])
    return rows


def idle_rows(cells: list[IdleCell]) -> list[list[str]]:
    base = next((c for c in cells if c.label == BASELINE and c.ok), None)
    rows = []
    for cell in cells:
        if not cell.ok or cell.run is None:
            rows.append([cell.label, f"FAILED: {(cell.error or 'no run').splitlines()[0]}"])
            continue
        run = cell.run
        rows.append([cell.label, "0", "0", "-", f"{run.base.rss_kib / 1024:,.1f}", "-",
                     str(run.base.threads), str(run.base.fds), "-", "", "", ""])
        for i, step in enumerate(run.steps):
            last = i == len(run.steps) - 1
            per = step.kib_per_conn(run.base)
            base_per = _per_at(base.run, step.target) if base and base.run else None
            ratio = per / base_per if per is not None and base_per else None
            rows.append([
                cell.label, f"{step.target:,}", f"{step.opened:,}", f"{step.open_s:.1f}",
                f"{step.memory.rss_kib / 1024:,.1f}", _num(per, 1), str(step.memory.threads),
                str(step.memory.fds), _ratio(ratio),
                f"{run.alive_after_hold:,}" if last else "",
                f"{run.hold_server_cores:.3f}" if last else "",
                f"{run.stop.seconds:.1f}" if last and run.stop else "",
            ])
            if step.errors:
                kinds = "; ".join(f"{n} x {kind}" for kind, n in step.errors.items())
                rows.append([cell.label, f"  errors at {step.target:,}: {kinds}"])
    return rows


def _per_at(run: IdleRun, target: int) -> float | None:
    step: IdleStep | None = next((s for s in run.steps if s.target == target), None)
    return step.kib_per_conn(run.base) if step is not None and step.opened == target else None


def _table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    widths = [len(c) for c in columns]
    for row in rows:
        if len(row) == len(columns):
            widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]

    def fmt(row: list[str]) -> str:
        if len(row) != len(columns):
            return row[0].ljust(widths[0]) + "  " + row[1]
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(row, widths, strict=True)))

    return [fmt(list(columns)), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def notes(results: Results) -> list[str]:
    found = []
    for cell in results.echo:
        busy = [r for r in cell.runs if r.client_cores > CLIENT_SATURATED_CORES]
        if busy:
            found.append(f"note: echo {cell.label}: the client used more than "
                         f"{CLIENT_SATURATED_CORES} cores in {len(busy)} of {len(cell.runs)} runs: "
                         "it may be the bottleneck (try --client-procs 2).")
        late = sum(r.result.late_start for r in cell.runs)
        if late:
            found.append(f"note: echo {cell.label}: the clients were still connecting when "
                         f"the window opened in {late} run(s).")
        killed = sum(r.stop is not None and r.stop.killed for r in cell.runs)
        if killed:
            found.append(f"note: echo {cell.label} did not stop on SIGTERM in {killed} run(s) "
                         "and was killed.")
        kinds: dict[str, int] = {}
        for r in cell.runs:
            for kind, n in r.result.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
            for status, n in r.nginx_statuses.items():
                kinds[f"nginx status {status}"] = kinds.get(f"nginx status {status}", 0) + n
        if kinds:
            found.append(f"note: echo {cell.label} failures: "
                         + "; ".join(f"{n} x {k}" for k, n in kinds.items()))
    runs = [r for c in results.echo for r in c.runs]
    disturbed = sum(r.cpu.other_cores > DISTURBED_OTHER_CORES for r in runs)
    if disturbed:
        found.append(f"note: in {disturbed} of {len(runs)} echo runs other processes used more "
                     f"than {DISTURBED_OTHER_CORES} cores: compare 'per cpu-s' more than the rate.")
    for idle in results.idle:
        if idle.run is not None and idle.run.log_excerpt:
            found.append(f"note: idle {idle.label} logged:\n    "
                         + idle.run.log_excerpt.replace("\n", "\n    "))
        if idle.run is not None and idle.run.stop is not None and idle.run.stop.killed:
            found.append(f"note: idle {idle.label} did not stop on SIGTERM and was killed.")
    return found


def text(results: Results) -> str:
    out: list[str] = []
    if results.echo:
        out += ["WebSocket echo through nginx (one worker process)", ""]
        out += _table(_ECHO_COLUMNS, echo_rows(results.echo)) + [""]
    if results.idle:
        out += ["Idle WebSockets on one worker (straight to its unix socket)", ""]
        out += _table(_IDLE_COLUMNS, idle_rows(results.idle)) + [""]
    return "\n".join(out + notes(results))


def _markdown_table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        row = row + [""] * (len(columns) - len(row))
        out.append("| " + " | ".join(v.replace("|", "\\|") for v in row) + " |")
    return out


def markdown(results: Results, meta: dict[str, Any]) -> str:
    out = [f"# WebSocket benchmark {meta['started']}", ""]
    out += [f"- {key}: {value}" for key, value in meta.items() if key != "commands"]
    out += [f"- command ({impl}): `{cmd}`" for impl, cmd in meta["commands"].items()]
    if results.echo:
        out += ["", "## Echo through nginx", ""] + _markdown_table(_ECHO_COLUMNS,
                                                                    echo_rows(results.echo))
    if results.idle:
        out += ["", "## Idle WebSockets on one worker", ""] + _markdown_table(
            _IDLE_COLUMNS, idle_rows(results.idle))
    found = notes(results)
    if found:
        out += [""] + [f"- {line.removeprefix('note: ')}" for line in found]
    return "\n".join(out) + "\n"


def as_json(results: Results, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "echo": [{"server": c.label, "command": c.command, "error": c.error,
                  "median_round_trips_per_s": c.rate if c.ok else None,
                  "median_round_trips_per_server_cpu_s": c.efficiency if c.ok else None,
                  "runs": [{**asdict(r), "per_cpu_s": r.per_cpu_s,
                            "client_cores": r.client_cores} for r in c.runs]}
                 for c in results.echo],
        "idle": [{"server": c.label, "command": c.command, "error": c.error,
                  "run": None if c.run is None else {
                      **asdict(c.run),
                      "kib_per_connection": {s.target: s.kib_per_conn(c.run.base)
                                             for s in c.run.steps}}}
                 for c in results.idle],
    }


def write(results: Results, meta: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = meta["started"].replace(":", "").replace("-", "") + "-ws"
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(as_json(results, meta), indent=2, default=str) + "\n")
    md_path.write_text(markdown(results, meta))
    return json_path, md_path


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
