"""Entry point: run our server and its peers (gunicorn; granian and uWSGI for WSGI; uvicorn and
granian for ASGI) behind one nginx, measure with wrk, print a table.

Order of work, and why:

* One nginx for the whole run, so every server is measured through the same proxy.
* The loop runs *rounds* outermost: round 1 measures every cell once, then round 2, and so on.
  On a shared 2-core machine the background load drifts over minutes; spreading each cell's
  runs across the whole benchmark exposes all cells to the same drift, and within a round
  ours and gunicorn run back to back.  Each run starts a fresh server, checks one response
  through nginx, warms up, measures, and stops the server.
* A cell that fails (its server will not start, dies, or answers wrongly) is reported and
  skipped in later rounds; the other cells still run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench import cpu, matrix, procs, profile, report  # noqa: E402
from bench.nginx import NGINX, UPSTREAM_KEEPALIVE_TIMEOUT, Nginx, nginx_version  # noqa: E402
from bench.serve import ServerError, cell_run  # noqa: E402
from bench.wrk import WRK, WrkError, wrk_version  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Our server vs gunicorn behind the same nginx (unix socket, upstream "
                    "keep-alive), measured with wrk. 'python -m bench ws --help': the "
                    "WebSocket benchmark.")
    parser.add_argument("--servers", default=",".join(matrix.DEFAULT_SERVER_CLASSES),
                        help="Comma-separated worker classes (each runs ours and gunicorn; "
                             "'asgi' runs ours, uvicorn, granian and gunicorn on the ASGI "
                             "apps; 'wsgi-peers' runs granian-wsgi and uwsgi once, compared "
                             "with every WSGI class of ours) or IMPL:CLASS for one side only, "
                             "e.g. gunicorn:sync, uvicorn:asgi, uwsgi:wsgi-peers. Known classes: "
                             f"{', '.join(matrix.SERVER_CLASSES)}. Default: %(default)s.")
    parser.add_argument("--scenarios", default=",".join(matrix.DEFAULT_SCENARIOS),
                        help=f"Comma-separated, from: {', '.join(matrix.SCENARIOS)}. "
                             "Default: all.")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes per server "
                        "(the same for both). Default: %(default)s.")
    parser.add_argument("--runs", type=int, default=3, help="Measured runs per cell; the "
                        "median is reported. Default: %(default)s.")
    parser.add_argument("--duration", type=int, default=5, help="Seconds per run. "
                        "Default: %(default)s.")
    parser.add_argument("--warmup", type=int, default=1, help="Seconds of unmeasured load "
                        "before each run; 0: none. Default: %(default)s.")
    parser.add_argument("--quick", action="store_true",
                        help="1 run of 2 s per cell (overrides --runs and --duration).")
    parser.add_argument("--keep-alive", type=int, default=75,
                        help="The servers' --keep-alive in seconds; nginx's upstream "
                             f"keepalive_timeout is {UPSTREAM_KEEPALIVE_TIMEOUT}s. "
                             "Default: %(default)s.")
    parser.add_argument("--ours-cmd", default=os.environ.get("BENCH_OURS_CMD",
                                                            matrix.DEFAULT_COMMANDS[matrix.OURS]),
                        help="Command template for our server (also from BENCH_OURS_CMD). "
                             "Placeholders: {python} {workers} {worker_class} {threads} "
                             "{threads_opt} {socket} {keep_alive} {app}. Default: %(default)r.")
    parser.add_argument("--gunicorn-cmd", default=matrix.DEFAULT_COMMANDS[matrix.GUNICORN],
                        help="Command template for gunicorn. Default: %(default)r.")
    parser.add_argument("--uvicorn-cmd", default=matrix.DEFAULT_COMMANDS[matrix.UVICORN],
                        help="Command template for uvicorn (asgi class). "
                             "Default: %(default)r.")
    parser.add_argument("--granian-cmd", default=matrix.DEFAULT_COMMANDS[matrix.GRANIAN],
                        help="Command template for granian (asgi class). "
                             "Default: %(default)r.")
    parser.add_argument("--granian-wsgi-cmd",
                        default=matrix.DEFAULT_COMMANDS[matrix.GRANIAN_WSGI],
                        help="Command template for granian --interface wsgi (wsgi-peers "
                             "class). Default: %(default)r.")
    parser.add_argument("--uwsgi-cmd", default=matrix.DEFAULT_COMMANDS[matrix.UWSGI],
                        help="Command template for uWSGI (wsgi-peers class; nginx speaks "
                             "the uwsgi protocol to it). Default: %(default)r.")
    parser.add_argument("--start-timeout", type=float, default=30.0,
                        help="Seconds a server gets to answer its first request. "
                             "Default: %(default)s.")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="Where the JSON and markdown results go. Default: bench/results.")
    parser.add_argument("--profile", action="store_true",
                        help="Sample our server with py-spy during every measured run (ours "
                             "only) and print its top functions; raw stacks, the summary and "
                             "a flame graph (SVG) go to the results dir. py-spy costs CPU: "
                             "profile in a run of its own, its figures are not comparable.")
    parser.add_argument("--profile-native", action="store_true",
                        help="With --profile: sample C frames too (py-spy --native), so that "
                             "time in our compiled (mypyc) modules shows under their own "
                             "names instead of their Python callers'. Costs more CPU.")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="Keep the run's temp dir (nginx config and logs, server logs).")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 2
    for name in ("workers", "runs", "duration"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 (none) or more")
    if args.profile_native and not args.profile:
        parser.error("--profile-native needs --profile")
    return args


def preflight(cells: list[matrix.Cell]) -> list[str]:
    """Problems that would make the whole run pointless, found before anything starts."""
    problems = [f"{tool} not found" for tool in (NGINX, WRK) if not Path(tool).exists()]
    missing = {mod for cell in cells for mod in cell.server_class.needs
               if importlib.util.find_spec(mod) is None}
    problems += [f"module {mod!r} is not installed (needed by a selected worker class)"
                 for mod in sorted(missing)]
    impls = {cell.impl for cell in cells}
    problems += [f"{impl} is not installed (module {mod!r})"
                 for impl, mods in matrix.IMPLEMENTATION_NEEDS.items() if impl in impls
                 for mod in mods if importlib.util.find_spec(mod) is None]
    return problems


def describe_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def describe(args: argparse.Namespace, commands: dict[str, str]) -> dict[str, Any]:
    """What the result depends on, saved next to the numbers."""
    commit = describe_commit()
    return {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "nginx": nginx_version(),
        "wrk": wrk_version(),
        **{name: _version(name) for name in ("gunicorn", "uvicorn", "granian", "pyuwsgi",
                                             "uvloop", "httptools")},
        "workers": args.workers,
        "runs": args.runs,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_keep_alive_s": args.keep_alive,
        "nginx_upstream_keepalive_timeout_s": UPSTREAM_KEEPALIVE_TIMEOUT,
        "commands": commands,
    }


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ws"]:  # ``python -m bench ws ...``: the WebSocket benchmark
        from bench import ws

        return ws.main(argv[1:])
    if argv[:1] == ["metrics"]:  # ``python -m bench metrics ...``: what --metrics-bind costs
        from bench import metrics_cost

        return metrics_cost.main(argv[1:])
    args = parse_args(argv)
    commands = {matrix.OURS: args.ours_cmd, matrix.GUNICORN: args.gunicorn_cmd,
                matrix.UVICORN: args.uvicorn_cmd, matrix.GRANIAN: args.granian_cmd,
                matrix.GRANIAN_WSGI: args.granian_wsgi_cmd, matrix.UWSGI: args.uwsgi_cmd}
    try:
        cells = matrix.build_cells(_split(args.servers), _split(args.scenarios))
        for template in commands.values():
            matrix.check_template(template)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    problems = preflight(cells)
    if args.profile and profile.available() is None:
        problems.append("--profile needs py-spy (pip install py-spy)")
    if problems:
        print("bench: cannot run:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    used = {cell.impl for cell in cells}
    meta = describe(args, {impl: cmd for impl, cmd in commands.items() if impl in used})
    meta["busy_cores_before_start"] = round(cpu.machine_load(1.0), 2)
    if meta["busy_cores_before_start"] > report.DISTURBED_OTHER_CORES:
        print(f"bench: warning: other processes keep {meta['busy_cores_before_start']} cores "
              "busy; the figures will be noisy (see the 'other cpu' column)", file=sys.stderr)
    procs.install_cleanup()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    (run_dir / "logs").mkdir()
    nginx = Nginx(run_dir, run_dir / "app.sock")
    results = {cell.key: report.CellResult(cell) for cell in cells}
    print(f"bench: {len(cells)} cells x {args.runs} run(s) of {args.duration}s "
          f"(+{args.warmup}s warm-up), {args.workers} workers; temp dir {run_dir}", flush=True)
    try:
        nginx.start()
        for round_no in range(1, args.runs + 1):
            for cell in cells:
                _measure(cell, results[cell.key], nginx, args, commands, run_dir,
                         round_no)
        print()
        print(report.text_table(results))
        json_path, md_path = report.write_results(results, meta, args.results_dir)
        print(f"\nresults: {json_path}\n         {md_path}")
        if args.profile:
            measured = {key for key, result in results.items() if result.runs}
            _profile_summaries(cells, run_dir, json_path.with_suffix(""), measured)
    finally:
        nginx.stop()
        procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if all(result.ok for result in results.values()) else 1


def _measure(cell: matrix.Cell, result: report.CellResult, nginx: Nginx,
             args: argparse.Namespace, commands: dict[str, str], run_dir: Path,
             round_no: int) -> None:
    prefix = f"[{round_no}/{args.runs}]"
    if result.error is not None:
        return
    if not nginx.alive():
        raise RuntimeError("nginx died; see its error log (rerun with --keep-tmp)")
    argv = matrix.server_command(commands[cell.impl], cell, python=sys.executable,
                                 workers=args.workers, socket=nginx.app_socket,
                                 keep_alive=args.keep_alive)
    profile_path = None
    if args.profile and cell.impl == matrix.OURS:
        profile_path = _profile_path(cell, run_dir, round_no)
        profile_path.parent.mkdir(exist_ok=True)
    started = time.monotonic()
    try:
        run = cell_run(cell, argv, nginx, cwd=REPO_ROOT, log_dir=run_dir / "logs",
                       run_dir=run_dir, duration_s=args.duration, warmup_s=args.warmup,
                       start_timeout=args.start_timeout, profile_path=profile_path,
                       profile_native=args.profile_native)
    except (ServerError, WrkError) as exc:  # this cell fails; the others go on
        result.error = str(exc)
        print(f"{prefix} {cell.key}: FAILED: {exc}", flush=True)
        return
    result.runs.append(run)
    print(f"{prefix} {cell.key}: {run.wrk.rps:,.0f} req/s, p99 {run.wrk.p99_us / 1000:.1f} ms, "
          f"{run.logs.non_2xx} non-2xx, {run.logs.upstream_errors} upstream errors, "
          f"{run.wrk.socket_errors} socket errors, {report.format_number(run.requests_per_cpu_s)} "
          "req/cpu-s, "
          f"other cpu {run.cpu.other_cores:.2f}; {_stop_text(run.stop)} "
          f"({time.monotonic() - started:.1f}s)", flush=True)


def _profile_path(cell: matrix.Cell, run_dir: Path, round_no: int) -> Path:
    return run_dir / "profiles" / f"{cell.key.replace('/', '_')}.{round_no}.raw"


def _profile_summaries(cells: list[matrix.Cell], run_dir: Path, stem: Path,
                       measured: set[str]) -> None:
    """Merge each profiled cell's runs, keep the raw stacks, the summary and a flame graph next
    to the results, print the top."""
    for cell in cells:
        name = cell.key.replace("/", "_")
        raws = sorted((run_dir / "profiles").glob(f"{name}.*.raw"))
        if not raws:
            if cell.impl == matrix.OURS and cell.key in measured:
                log = run_dir / "logs" / f"{name}.py-spy.log"
                said = log.read_text(errors="replace").strip()[-500:] if log.exists() else ""
                print(f"\nprofile of {cell.key}: py-spy wrote nothing; it said: "
                      f"{said or '(nothing)'}", file=sys.stderr)
            continue
        merged = stem.with_name(f"{stem.name}-profile-{name}.raw")
        merged.write_text("".join(raw.read_text(errors="replace") for raw in raws))
        summary = profile.summarise(merged)
        merged.with_suffix(".txt").write_text(summary + "\n")
        svg = merged.with_suffix(".svg")
        svg.write_text(profile.flamegraph_svg(merged, title=f"{cell.key} ({len(raws)} run(s))"))
        print(f"\nprofile of {cell.key} ({len(raws)} run(s)):\n{summary}\n"
              f"raw stacks: {merged}\nflame graph: {svg}")


def _stop_text(stop: report.StopResult | None) -> str:
    if stop is None:
        return "not stopped"
    if stop.killed:
        return f"KILLED after {stop.seconds:.0f}s: no exit on SIGTERM"
    return f"stopped in {stop.seconds:.1f}s"


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
