"""Running wrk and reading its result.

Each measurement gets one wrk script: the scenario's own script (if any) followed by
``lua/report.lua``, whose ``done`` hook prints a JSON line; wrk accepts a single ``-s`` file,
hence the concatenation into the run's temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.matrix import POST_BODY_BYTES, Scenario

WRK = "/usr/bin/wrk"
LUA_DIR = Path(__file__).resolve().parent / "lua"
_MARKER = "BENCH_RESULT "
# wrk's default 2 s timeout would drop exactly the slow requests a queueing scenario is about
# (2 sync workers x 50 ms against 100 connections queue for ~2.5 s), hiding them from p99.
REQUEST_TIMEOUT_S = 10


class WrkError(Exception):
    """wrk failed, hung, or printed no result."""


@dataclass(frozen=True)
class WrkResult:
    duration_us: float
    requests: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int   # responses with a status >= 400, as wrk counts them
    timeouts: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts


def write_script(scenario: Scenario, run_dir: Path) -> Path:
    """Combine the scenario's script with the reporter into one file for ``wrk -s``."""
    parts = []
    if scenario.lua:
        parts.append((LUA_DIR / scenario.lua).read_text())
    parts.append((LUA_DIR / "report.lua").read_text())
    path = run_dir / f"wrk-{scenario.name}.lua"
    path.write_text("\n".join(parts))
    return path


def run_wrk(url: str, script: Path, *, connections: int, duration_s: int,
            threads: int = 2) -> WrkResult:
    """One wrk measurement; raises WrkError if wrk fails or prints no result."""
    argv = [WRK, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration_s}s",
            f"--timeout={REQUEST_TIMEOUT_S}s", "-s", str(script), url]
    env = dict(os.environ, BENCH_POST_BYTES=str(POST_BODY_BYTES))
    # subprocess.run kills wrk (by its PID) if the timeout passes or anything interrupts us.
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=duration_s + REQUEST_TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish a {duration_s}s run in time") from None
    for line in proc.stdout.splitlines():
        if line.startswith(_MARKER):
            return WrkResult(**json.loads(line[len(_MARKER):]))
    raise WrkError(f"wrk exited {proc.returncode} without a result:\n"
                   f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def wrk_version() -> str:
    proc = subprocess.run([WRK, "--version"], capture_output=True, text=True, timeout=10)
    return (proc.stdout or proc.stderr).splitlines()[0].split(" Copyright")[0].strip()
