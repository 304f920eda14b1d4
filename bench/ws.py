"""``python -m bench ws``: WebSockets, ours (each class that holds connections) vs uvicorn, and
the ASGI peers (ours ``-k asgi``, granian, gunicorn ``-k asgi``) on the same ASGI echo.

Two measurements, in one run, with the same nginx and process helpers as the HTTP matrix:

* **echo**: ``--clients`` WebSockets through nginx (its ``/ws`` location: HTTP/1.1, the
  Upgrade and ``Connection: upgrade`` headers, buffering off) to ONE worker process, each with
  one message in flight; round trips per second and per CPU-second of the server.  Rounds run
  outermost, as in the HTTP matrix, so every server sees the same drift in background load.
* **idle**: WebSockets opened straight on the server's unix socket (not through nginx, which
  would need two descriptors per connection and ``worker_connections`` above 20,000, beyond
  this machine's ``ulimit -n`` of 20,000), in steps up to 10,000; after each step the worker's
  RSS (``VmRSS`` from ``/proc/<worker>/status``), threads and descriptors.  Memory per
  connection is (RSS at N - RSS at 0) / N, where RSS at 0 is taken after a warm-up of 20
  connections opened and closed, so that lazily imported modules and the first buffers are
  in the baseline.  After the last step the connections are held for ``--hold`` seconds (the
  server's CPU use meanwhile is reported) and every one must still echo.

Design note: every server process is a child started in its own session and stopped by its
PID (:mod:`bench.procs`).  The echo load runs in separate processes (``python -m
bench.wsclient``), whose CPU is measured apart from the server's and reported, so a saturated
client is visible; the idle connections are held by this process itself.  The measurement
window of the echo load is an absolute CLOCK_MONOTONIC instant shared by the controller (which
samples CPU then) and the clients (which count then).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/ws.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from bench import cpu, procs, ws_report  # noqa: E402
from bench.nginx import NGINX, Nginx  # noqa: E402
from bench.run import RESULTS_DIR, describe_commit  # noqa: E402
from bench.serve import ServerError  # noqa: E402
from bench.ws_measure import echo_run, idle_run  # noqa: E402
from bench.wsclient import WsError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

OURS, UVICORN, GRANIAN, GUNICORN = "ours", "uvicorn", "granian", "gunicorn"
WSGI_ECHO, ASGI_ECHO = "bench.apps:ws_echo", "bench.apps:asgi_ws_echo"
DEFAULT_COMMANDS: dict[str, str] = {
    # One worker: the design brief's figures are for one process.  The same keep-alive as the
    # HTTP matrix; WebSocket pings every 20 s (our default, and uvicorn's).  {app} is the WSGI
    # echo for our WSGI classes, the ASGI echo for -k asgi.
    OURS: "{python} -m appserver serve -w 1 -k {worker_class} {class_opts} -b unix:{socket} "
          "--keep-alive 75 --worker-connections {connections} "
          "--websocket-max-connections {connections} {app}",
    # uvicorn with the websockets package, uvloop and httptools: its fastest configuration.
    # --workers 1 (the default) serves in this very process, so its PID is the worker's.
    UVICORN: "{python} -m uvicorn --uds {socket} --loop uvloop --http httptools --ws websockets "
             "--lifespan off --no-access-log --backlog 2048 --timeout-keep-alive 75 {app}",
    # granian: its master and one worker process (the master's only child).
    GRANIAN: "{python} -m granian --interface asgi --workers 1 --uds {socket} --loop uvloop "
             "--http 1 --ws --backlog 2048 --log-level warning {app}",
    # gunicorn 27's ASGI worker: a master and one worker.
    GUNICORN: "{python} -m gunicorn -w 1 -k asgi -b unix:{socket} --keep-alive 75 "
              "--worker-connections {connections} --backlog 2048 --no-control-socket {app}",
}
PLACEHOLDERS = ("python", "worker_class", "class_opts", "socket", "connections", "app")


@dataclass(frozen=True)
class WsServer:
    name: str                   # as given to --servers: one of our worker classes, or a peer
    impl: str
    class_opts: str = ""        # {class_opts}; may itself use {connections}
    needs: tuple[str, ...] = ()
    app: str = WSGI_ECHO        # {app}

    @property
    def has_master(self) -> bool:
        """Whether the worker is a child of the started process (uvicorn serves in it)."""
        return self.impl != UVICORN

    @property
    def label(self) -> str:
        return f"ours {self.name}" if self.impl == OURS else self.name


SERVERS: dict[str, WsServer] = {s.name: s for s in (
    # gthread holds a WebSocket in one of its threads: give it one per connection.
    WsServer("gthread", OURS, "--threads {connections}"),
    WsServer("gevent", OURS, needs=("gevent",)),
    WsServer("eventlet", OURS, needs=("eventlet",)),
    WsServer("asyncio", OURS),
    WsServer("tornado", OURS, needs=("tornado",)),
    WsServer(UVICORN, UVICORN, needs=("uvicorn", "websockets", "uvloop", "httptools"),
             app=ASGI_ECHO),
    # The ASGI peers, all on the ASGI echo: ours -k asgi, granian, gunicorn -k asgi.
    WsServer("asgi", OURS, app=ASGI_ECHO),
    WsServer(GRANIAN, GRANIAN, needs=("granian", "uvloop"), app=ASGI_ECHO),
    WsServer("gunicorn-asgi", GUNICORN, needs=("gunicorn",), app=ASGI_ECHO),
)}
DEFAULT_ECHO = ("gthread", "gevent", "eventlet", "asyncio", "tornado", "asgi", UVICORN, GRANIAN,
                "gunicorn-asgi")
DEFAULT_IDLE = ("gevent", "asyncio", "asgi", UVICORN)
DEFAULT_IDLE_COUNTS = (1000, 5000, 10000)


def command(template: str, server: WsServer, *, socket: Path, connections: int) -> list[str]:
    values = {"python": sys.executable, "worker_class": server.name, "socket": str(socket),
              "connections": str(connections), "app": server.app}
    quoted = {key: shlex.quote(value) for key, value in values.items()}
    quoted["class_opts"] = server.class_opts.format(**quoted)
    return shlex.split(template.format(**quoted))


def check_template(template: str) -> None:
    try:
        argv = shlex.split(template.format(**dict.fromkeys(PLACEHOLDERS, "x")))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"bad command template {template!r}: {exc!r}; placeholders are "
                         + " ".join("{" + name + "}" for name in PLACEHOLDERS)) from None
    if not argv:
        raise ValueError("empty command template")


def preflight(servers: list[WsServer]) -> list[str]:
    problems = [] if Path(NGINX).exists() else [f"{NGINX} not found"]
    missing = sorted({m for s in servers for m in s.needs if importlib.util.find_spec(m) is None})
    return problems + [f"module {m!r} is not installed (pip install {m})" for m in missing]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench ws",
        description="WebSockets: echo round trips through nginx, and idle connections per "
                    "worker with their memory; our worker classes vs uvicorn + websockets.")
    parser.add_argument("--modes", default="echo,idle",
                        help="Comma-separated: echo, idle. Default: %(default)s.")
    parser.add_argument("--servers", default=",".join(DEFAULT_ECHO),
                        help="Servers of the echo test: our worker classes ('asgi' is ours "
                             "-k asgi) and/or uvicorn, granian, gunicorn-asgi. "
                             f"Known: {', '.join(SERVERS)}. Default: %(default)s.")
    parser.add_argument("--idle-servers", default=",".join(DEFAULT_IDLE),
                        help="Servers of the idle test. Default: %(default)s.")
    parser.add_argument("--clients", type=int, default=32,
                        help="Echo: concurrent WebSockets, one message in flight each. "
                             "Default: %(default)s.")
    parser.add_argument("--client-procs", type=int, default=1,
                        help="Echo: client processes sharing the clients. Default: %(default)s.")
    parser.add_argument("--size", type=int, default=64,
                        help="Echo: message size in bytes (text). Default: %(default)s.")
    parser.add_argument("--runs", type=int, default=3,
                        help="Echo: measured runs per server; medians reported. "
                             "Default: %(default)s.")
    parser.add_argument("--duration", type=int, default=5,
                        help="Echo: seconds per run. Default: %(default)s.")
    parser.add_argument("--warmup", type=int, default=1,
                        help="Echo: seconds of unmeasured echoing first. Default: %(default)s.")
    parser.add_argument("--idle-counts", default=",".join(map(str, DEFAULT_IDLE_COUNTS)),
                        help="Idle: connection counts to step through. Default: %(default)s.")
    parser.add_argument("--hold", type=float, default=5.0,
                        help="Idle: seconds the last step's connections are held before every "
                             "one must echo again. Default: %(default)s.")
    parser.add_argument("--open-timeout", type=float, default=120.0,
                        help="Idle: seconds one step may take to open its connections. "
                             "Default: %(default)s.")
    parser.add_argument("--quick", action="store_true",
                        help="Echo: 1 run of 2 s; idle: 1000 and 5000 connections, 2 s hold.")
    parser.add_argument("--ours-cmd", default=DEFAULT_COMMANDS[OURS],
                        help="Command template for our server. Placeholders: "
                             + " ".join("{" + p + "}" for p in PLACEHOLDERS)
                             + ". Default: %(default)r.")
    parser.add_argument("--uvicorn-cmd", default=DEFAULT_COMMANDS[UVICORN],
                        help="Command template for uvicorn. Default: %(default)r.")
    parser.add_argument("--granian-cmd", default=DEFAULT_COMMANDS[GRANIAN],
                        help="Command template for granian. Default: %(default)r.")
    parser.add_argument("--gunicorn-cmd", default=DEFAULT_COMMANDS[GUNICORN],
                        help="Command template for gunicorn -k asgi. Default: %(default)r.")
    parser.add_argument("--start-timeout", type=float, default=30.0,
                        help="Seconds a server gets to answer its first request through nginx. "
                             "Default: %(default)s.")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="Where the JSON and markdown results go. Default: bench/results.")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="Keep the run's temp dir (nginx config and logs, server and client "
                             "logs).")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.hold = 1, 2, 2.0
        args.idle_counts = "1000,5000"
    args.modes = _split(args.modes)
    if not set(args.modes) <= {"echo", "idle"} or not args.modes:
        parser.error("--modes takes echo and/or idle")
    try:
        args.idle_counts = sorted({int(x) for x in _split(args.idle_counts)})
    except ValueError:
        parser.error("--idle-counts takes comma-separated integers")
    for name in ("clients", "client_procs", "runs", "duration", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.client_procs > args.clients:
        parser.error("--client-procs cannot exceed --clients")
    if not args.idle_counts or args.idle_counts[0] < 1:
        parser.error("--idle-counts must be positive")
    return args


def _servers(text: str) -> list[WsServer]:
    names = _split(text)
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise ValueError(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    return [SERVERS[n] for n in dict.fromkeys(names)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    templates = {OURS: args.ours_cmd, UVICORN: args.uvicorn_cmd, GRANIAN: args.granian_cmd,
                 GUNICORN: args.gunicorn_cmd}
    try:
        echo = _servers(args.servers) if "echo" in args.modes else []
        idle = _servers(args.idle_servers) if "idle" in args.modes else []
        for template in templates.values():
            check_template(template)
    except ValueError as exc:
        print(f"bench ws: {exc}", file=sys.stderr)
        return 2
    problems = preflight(echo + idle)
    if problems:
        print("bench ws: cannot run:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    used = {server.impl for server in echo + idle}
    meta = describe(args, {impl: cmd for impl, cmd in templates.items() if impl in used})
    meta["busy_cores_before_start"] = round(cpu.machine_load(1.0), 2)
    procs.install_cleanup()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    log_dir = run_dir / "logs"
    log_dir.mkdir()
    nginx = Nginx(run_dir, run_dir / "app.sock")
    results = ws_report.Results(echo=[ws_report.EchoCell(s.label) for s in echo],
                                idle=[ws_report.IdleCell(s.label) for s in idle])
    print(f"bench ws: echo {len(echo)} servers x {args.runs} run(s) of {args.duration}s, "
          f"{args.clients} clients; idle {len(idle)} servers up to {args.idle_counts[-1]:,} "
          f"connections; temp dir {run_dir}", flush=True)
    try:
        nginx.start()
        connections = args.clients + 16
        for round_no in range(1, args.runs + 1 if echo else 1):
            for server, cell in zip(echo, results.echo, strict=True):
                if cell.error is not None:
                    continue
                argv = command(templates[server.impl], server, socket=nginx.app_socket,
                               connections=connections)
                cell.command = " ".join(argv)
                try:
                    run = echo_run(server.name, argv, nginx, args, log_dir, REPO_ROOT,
                                   has_master=server.has_master)
                except (ServerError, WsError, OSError) as exc:
                    cell.error = str(exc)
                    print(f"[{round_no}/{args.runs}] echo {server.label}: FAILED: {exc}",
                          flush=True)
                    continue
                cell.runs.append(run)
                print(f"[{round_no}/{args.runs}] echo {server.label}: "
                      + ws_report.echo_line(run), flush=True)
        connections = args.idle_counts[-1] + 100
        for server, idle_cell in zip(idle, results.idle, strict=True):
            argv = command(templates[server.impl], server, socket=nginx.app_socket,
                           connections=connections)
            idle_cell.command = " ".join(argv)
            print(f"idle {server.label}:", flush=True)
            started = time.monotonic()
            try:
                idle_cell.run = idle_run(server.name, argv, nginx, args, log_dir, REPO_ROOT,
                                         has_master=server.has_master)
            except (ServerError, WsError, OSError) as exc:
                idle_cell.error = str(exc)
                print(f"idle {server.label}: FAILED: {exc}", flush=True)
                continue
            print(f"idle {server.label}: " + ws_report.idle_line(idle_cell.run)
                  + f" ({time.monotonic() - started:.0f}s)", flush=True)
        print()
        print(ws_report.text(results))
        json_path, md_path = ws_report.write(results, meta, args.results_dir)
        print(f"\nresults: {json_path}\n         {md_path}")
    finally:
        nginx.stop()
        procs.stop_all()
        if args.keep_tmp:
            print(f"temp dir kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if results.ok else 1


def describe(args: argparse.Namespace, templates: dict[str, str]) -> dict[str, object]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": describe_commit(),
        "cpus": os.cpu_count(),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": sys.version.split()[0],
        **{name: version(name) for name in ("uvicorn", "websockets", "uvloop", "wsproto",
                                             "gevent", "eventlet", "tornado", "granian",
                                             "gunicorn")},
        "modes": args.modes, "clients": args.clients, "client_procs": args.client_procs,
        "message_bytes": args.size, "runs": args.runs, "duration_s": args.duration,
        "warmup_s": args.warmup, "idle_counts": args.idle_counts, "hold_s": args.hold,
        "commands": templates,
    }


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
