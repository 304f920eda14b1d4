"""``python -m bench metrics``: what ``--metrics-bind`` costs a request, ours against ours.

The same server and app (hello world through nginx over the unix socket, the HTTP matrix's
machinery) run with metrics off (the defaults) and on (``--metrics-bind unix:...`` with a
Prometheus-style scrape every ``--scrape-interval`` seconds during the measurement, as a real
deployment has).  The cost is the ratio on/off of requests per second and of requests per
CPU-second of the server (its workers and its master, which answers the scrapes).

Design note: rounds run outermost and the off/on order alternates between rounds, so a drift in
the machine's background load falls on both modes alike.  req/CPU-s is the figure to judge: it
counts only the time the server ran, so a noisy neighbour moves it far less than req/s.  On a
2-core machine one run's req/CPU-s still varies by several percent (wrk, nginx and the workers
share the cores, and who preempts whom changes from run to run), which is the size of the cost
being measured; so besides the ratio of the medians the summary gives the median of the rounds'
paired ratios (on/off measured back to back) with their range, and more rounds narrow it.  A
scrape that fails during a measurement is an error of the run (a metrics listener that stops
answering under load is a finding, not noise).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench import matrix, procs
from bench.nginx import Nginx
from bench.report import Run
from bench.run import REPO_ROOT, RESULTS_DIR, describe_commit
from bench.serve import ServerError, cell_run
from bench.wrk import WrkError

MODES = ("off", "on")


class Scraper(threading.Thread):
    """GET /metrics on a unix socket every ``interval`` seconds until stopped."""

    def __init__(self, path: Path, interval: float) -> None:
        super().__init__(daemon=True)
        self.path, self.interval = path, interval
        self.done = threading.Event()
        self.ok = 0
        # Failures between the first and the last good scrape.  Those before the first are the
        # server starting, those after the last are its stop at the end of the run.
        self.failed: list[str] = []
        self._pending: list[str] = []

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self._scrape()
            except OSError as exc:
                if self.ok:
                    self._pending.append(repr(exc))
                continue
            self.ok += 1
            self.failed += self._pending
            self._pending = []

    def _scrape(self) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.path))
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        if not data.startswith(b"HTTP/1.0 200") or b"appserver_requests_total" not in data:
            raise OSError(f"bad scrape answer: {data[:80]!r}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench metrics", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--classes", default="sync,gthread",
                        help="our worker classes, comma-separated (default: sync,gthread)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of off+on (default 3)")
    parser.add_argument("--duration", type=int, default=4, help="seconds per run (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up (default 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scrape-interval", type=float, default=1.0,
                        help="seconds between scrapes with metrics on (0: no scrapes)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    names = [name for name in args.classes.split(",") if name]
    unknown = [name for name in names if name not in matrix.SERVER_CLASSES
               or matrix.SERVER_CLASSES[name].interface != "wsgi"]
    if unknown:
        print(f"bench metrics: unknown WSGI classes: {', '.join(unknown)}", file=sys.stderr)
        return 2
    scenario = matrix.SCENARIOS["hello"]
    cells = [matrix.Cell(scenario, matrix.SERVER_CLASSES[name], matrix.OURS) for name in names]
    procs.install_cleanup()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    (run_dir / "logs").mkdir()
    nginx = Nginx(run_dir, run_dir / "app.sock")
    runs: dict[tuple[str, str], list[Run]] = {(c.server_class.name, m): [] for c in cells
                                              for m in MODES}
    errors: list[str] = []
    print(f"bench metrics: {len(cells)} classes x {args.rounds} rounds x off/on, "
          f"{args.duration}s each; temp dir {run_dir}", flush=True)
    try:
        nginx.start()
        for round_no in range(1, args.rounds + 1):
            order = MODES if round_no % 2 else MODES[::-1]
            for cell in cells:
                for mode in order:
                    try:
                        run = _measure(cell, mode, nginx, args, run_dir)
                    except (ServerError, WrkError, RuntimeError) as exc:
                        errors.append(f"{cell.server_class.name}/{mode}: {exc}")
                        print(f"[{round_no}] {cell.server_class.name} {mode}: FAILED: {exc}",
                              flush=True)
                        continue
                    runs[(cell.server_class.name, mode)].append(run)
                    print(f"[{round_no}] {cell.server_class.name:8s} metrics {mode:3s}: "
                          f"{run.wrk.rps:,.0f} req/s, {_efficiency(run):,.0f} req/cpu-s, "
                          f"other cpu {run.cpu.other_cores:.2f}", flush=True)
    finally:
        nginx.stop()
        procs.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    summary = _summary(names, runs)
    print("\nclass     req/s off -> on (ratio)          req/cpu-s off -> on (ratio)")
    for row in summary:
        print(f"{row['class']:8s}  {row['rps_off']:9,.0f} -> {row['rps_on']:9,.0f} "
              f"({row['rps_ratio']:.3f})   {row['eff_off']:9,.0f} -> {row['eff_on']:9,.0f} "
              f"({row['eff_ratio']:.3f})")
        if "eff_paired_median" in row:
            low, high = row["eff_paired_range"]
            print(f"          req/cpu-s on/off paired by round: median {row['eff_paired_median']:.3f}"
                  f" (range {low:.3f} to {high:.3f})")
    path = _write(args, summary, runs, errors)
    print(f"\nresults: {path}")
    return 1 if errors else 0


def _measure(cell: matrix.Cell, mode: str, nginx: Nginx, args: argparse.Namespace,
             run_dir: Path) -> Run:
    argv = matrix.server_command(matrix.DEFAULT_COMMANDS[matrix.OURS], cell,
                                 python=sys.executable, workers=args.workers,
                                 socket=nginx.app_socket, keep_alive=75)
    scraper = None
    if mode == "on":
        metrics_socket = run_dir / "metrics.sock"
        metrics_socket.unlink(missing_ok=True)
        argv += ["--metrics-bind", f"unix:{metrics_socket}"]
        if args.scrape_interval > 0:  # 0: the listener is there, nobody scrapes
            scraper = Scraper(metrics_socket, args.scrape_interval)
            scraper.start()
    try:
        run = cell_run(cell, argv, nginx, cwd=REPO_ROOT, log_dir=run_dir / "logs",
                       run_dir=run_dir, duration_s=args.duration, warmup_s=args.warmup,
                       start_timeout=30.0)
    finally:
        if scraper is not None:
            scraper.done.set()
            scraper.join(10)
    if scraper is not None:
        if scraper.failed:
            raise RuntimeError(f"{len(scraper.failed)} scrapes failed: {scraper.failed[:3]}")
        if scraper.ok < args.duration / args.scrape_interval:
            raise RuntimeError(f"only {scraper.ok} scrapes succeeded in a {args.duration} s run")
    return run


def _efficiency(run: Run) -> float:
    return run.requests_per_cpu_s or 0.0


def _summary(names: list[str], runs: dict[tuple[str, str], list[Run]]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        off, on = runs[(name, "off")], runs[(name, "on")]
        if not off or not on:
            continue
        row: dict[str, Any] = {"class": name}
        row["rps_off"] = statistics.median(r.wrk.rps for r in off)
        row["rps_on"] = statistics.median(r.wrk.rps for r in on)
        row["eff_off"] = statistics.median(_efficiency(r) for r in off)
        row["eff_on"] = statistics.median(_efficiency(r) for r in on)
        row["rps_ratio"] = row["rps_on"] / row["rps_off"]
        row["eff_ratio"] = row["eff_on"] / row["eff_off"]
        # Paired by round: only when no run failed (a failed run would shift the pairs).
        paired = [b.requests_per_cpu_s / a.requests_per_cpu_s for a, b in zip(off, on, strict=True)
                  if a.requests_per_cpu_s and b.requests_per_cpu_s] if len(off) == len(on) else []
        if paired:
            row["eff_paired_median"] = statistics.median(paired)
            row["eff_paired_range"] = [min(paired), max(paired)]
        rows.append(row)
    return rows


def _write(args: argparse.Namespace, summary: list[dict[str, Any]],
           runs: dict[tuple[str, str], list[Run]], errors: list[str]) -> Path:
    started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"metrics-{started}.json"
    detail = {f"{name}/{mode}": [{"rps": r.wrk.rps, "req_per_cpu_s": r.requests_per_cpu_s,
                                  "p99_us": r.wrk.p99_us, "other_cores": r.cpu.other_cores,
                                  "non_2xx": r.logs.non_2xx,
                                  "upstream_errors": r.logs.upstream_errors}
                                 for r in rs] for (name, mode), rs in runs.items()}
    path.write_text(json.dumps({
        "meta": {"started": started, "commit": describe_commit(), "rounds": args.rounds,
                 "duration_s": args.duration, "workers": args.workers,
                 "scrape_interval_s": args.scrape_interval},
        "summary": summary, "runs": detail, "errors": errors}, indent=2) + "\n")
    return path
