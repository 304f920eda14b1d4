"""One measured run of one cell: start the server, check it, warm up, measure, stop it.

Design note: the server binds the unix socket that nginx's upstream names, so the socket file
is removed before each start (the previous server may have left it).  Readiness is "the socket
exists and one request through nginx returns the expected response": a server that starts but
answers wrongly is a failed cell, not a fast one.  The nginx log window is opened only after
the warm-up, so start-up noise (nginx's 502s while the socket is not there yet, stale kept-alive
connections to the previous server) is never counted against the server being measured.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import cpu, profile
from bench.matrix import UPSTREAM_PROTOCOL, Cell, Scenario
from bench.nginx import Nginx
from bench.procs import ManagedProcess, wait_until
from bench.report import STOP_TIMEOUT_S, Run, StopResult
from bench.wrk import run_wrk, write_script

# Settings that would silently change what either server runs with; the benchmark sets what it
# means to set on the command line and nothing else.
_SCRUBBED_ENV_PREFIXES = ("APPSERVER_", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY")
# After the warm-up's barrier request returns, give the other workers a moment to finish what
# they still hold (see _drain).
_DRAIN_SETTLE_S = 0.2
# After wrk exits, nginx still finalizes the requests wrk abandoned (499s); let those lines land
# in this run's window rather than in nobody's.
_LOG_SETTLE_S = 0.3


class ServerError(Exception):
    """The server under test did not start, died, or answered wrongly."""


def server_env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    # The apps live in the bench package at the repo root; do not rely on either server adding
    # its working directory to sys.path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
    return env


def cell_run(cell: Cell, argv: list[str], nginx: Nginx, *, cwd: Path, log_dir: Path,
             run_dir: Path, duration_s: int, warmup_s: int, start_timeout: float,
             profile_path: Path | None = None, profile_native: bool = False) -> Run:
    """``profile_path``: sample the server with py-spy during the measurement, raw stacks
    written there (see bench/profile.py); ``profile_native``: C frames too."""
    nginx.app_socket.unlink(missing_ok=True)
    log_path = log_dir / (cell.key.replace("/", "_") + ".log")
    with open(log_path, "a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
    server = ManagedProcess(cell.key, argv, log_path=log_path, cwd=cwd, env=server_env(cwd))
    # The nginx listener that speaks this server's protocol upstream (uWSGI: uwsgi).
    url = nginx.url_for(UPSTREAM_PROTOCOL.get(cell.impl, "http")) + "/"
    try:
        wait_ready(cell.scenario, server, nginx, start_timeout, url=url)
        script = write_script(cell.scenario, run_dir)
        if warmup_s > 0:
            run_wrk(url, script, connections=cell.scenario.connections, duration_s=warmup_s)
            _drain(cell, url, start_timeout)
        assert nginx.proc is not None
        mark = nginx.mark()
        spy = None
        if profile_path is not None:
            spy = profile.start(server.pid, duration_s, profile_path,
                                log_dir / (cell.key.replace("/", "_") + ".py-spy.log"),
                                native=profile_native)
            time.sleep(0.5)  # attaching to the master and its workers takes a moment
        cpu_start = cpu.sample(server.pid, nginx.proc.pid)
        try:
            result = run_wrk(url, script, connections=cell.scenario.connections,
                             duration_s=duration_s)
            cpu_use = cpu.between(cpu_start, cpu.sample(server.pid, nginx.proc.pid),
                                  server.pid, nginx.proc.pid)
        finally:
            if spy is not None:
                profile.finish(spy, duration_s)
        time.sleep(_LOG_SETTLE_S)
        window = nginx.window(mark)
        if not server.alive():
            raise ServerError(f"server exited ({server.popen.returncode}) during the run:\n"
                              f"{server.log_tail()}")
        run = Run(result, window, cpu_use)
    finally:
        stop = stop_server(server, log_path)
    run.stop = stop
    return run


def stop_server(server: ManagedProcess, log_path: Path) -> StopResult:
    """Stop the server and time it: a graceful stop that hangs is worth reporting too."""
    started = time.monotonic()
    status = server.stop(timeout=STOP_TIMEOUT_S)
    result = StopResult(time.monotonic() - started, status, server.left_orphans)
    if result.killed:
        with open(log_path, "a") as fh:
            fh.write(f"[bench] server did not stop within {STOP_TIMEOUT_S:.0f}s of SIGTERM; "
                     f"killed (status {status})\n")
    return result


def wait_ready(scenario: Scenario, server: ManagedProcess, nginx: Nginx, timeout: float, *,
               url: str | None = None) -> None:
    """Wait for the socket, then for one request through nginx (at ``url``, by default its
    HTTP listener) that the scenario accepts."""
    url = url or nginx.url + "/"
    deadline = time.monotonic() + timeout
    if not wait_until(lambda: not server.alive() or nginx.app_socket.exists(), timeout):
        raise ServerError(f"no socket at {nginx.app_socket} after {timeout:.0f}s:\n"
                          f"{server.log_tail()}")
    last_problem = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(f"server exited with status {server.popen.returncode}:\n"
                              f"{server.log_tail()}")
        last_problem = _smoke_check(scenario, url)
        if not last_problem:
            return
        time.sleep(0.1)
    raise ServerError(f"not ready after {timeout:.0f}s ({last_problem}):\n{server.log_tail()}")


def _drain(cell: Cell, url: str, timeout: float) -> None:
    """Wait until the server has worked off the requests the warm-up abandoned.

    When wrk stops it closes connections with requests in flight; nginx drops the upstream side
    (499), but requests already queued in the server's listen backlog or thread pool still run.
    For the 50 ms app with 2 sync workers that is ~2.5 s of dead work, which would otherwise eat
    the start of the measurement.  One request queued behind them is a barrier: when it comes
    back, the queue ahead of it is empty.
    """
    problem = _smoke_check(cell.scenario, url, timeout=timeout)
    if problem:
        raise ServerError(f"no good answer after the warm-up: {problem}")
    time.sleep(_DRAIN_SETTLE_S)


def _smoke_check(scenario: Scenario, url: str, timeout: float = 5.0) -> str:
    """One request as the scenario makes them; returns what was wrong, or "" if nothing."""
    request = urllib.request.Request(url, data=scenario.request_body(), method=scenario.method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return str(exc)
    if status != 200:
        return f"HTTP {status}"
    if scenario.expect_body is not None and body != scenario.expect_body:
        return f"unexpected body {body[:60]!r}"
    return ""
