"""The master's decisions, as pure functions (no processes, no signals, no clock of their own).

Keeping them here lets the tests cover every branch -- what an exit status means, whose heartbeat
expired, how many workers to start or retire -- without forking anything.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from enum import Enum

EXIT_APP_LOAD_ERROR = 4
EXIT_BOOT_ERROR = 3  # a post_fork/post_worker_init hook raised (gunicorn's WORKER_BOOT_ERROR)
ABORT_GRACE = 2.0  # seconds between SIGABRT (stack dump) and SIGKILL for a timed-out worker


class Reason(Enum):
    STOPPED = "stopped"              # exited 0 (asked to, or recycled itself)
    APP_LOAD_ERROR = "app load error"
    BOOT_ERROR = "boot error"        # a boot hook raised: as fatal as an app load error
    CRASHED = "crashed"              # non-zero exit
    TIMEOUT_KILL = "timeout kill"    # the master aborted it: no heartbeat
    GRACE_KILL = "graceful timeout kill"  # the master killed it: it outlived the graceful timeout
    EXTERNAL_SIGNAL = "killed"       # a signal the master did not send


@dataclass(frozen=True)
class ExitVerdict:
    reason: Reason
    message: str
    level: str  # "info", "warning" or "error"


def describe_exit(pid: int, status: int, *, aborted_by_master: bool, killed_by_master: bool,
                  asked_to_stop: bool, timeout: int) -> ExitVerdict:
    """Say truthfully why a worker ended (gunicorn printed "Perhaps out of memory?" for every
    SIGKILL, its own timeout kills included: gunicorn #2215)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = _signal_name(sig)
        if aborted_by_master and sig in (signal.SIGABRT, signal.SIGKILL):
            return ExitVerdict(Reason.TIMEOUT_KILL,
                               f"worker {pid} timed out (no heartbeat for more than {timeout}s, "
                               f"--timeout) and was killed by the master with {name}", "error")
        if killed_by_master and sig == signal.SIGKILL:
            return ExitVerdict(Reason.GRACE_KILL,
                               f"worker {pid} did not stop within the graceful timeout and was "
                               f"killed by the master with SIGKILL", "warning")
        if asked_to_stop and sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            return ExitVerdict(Reason.STOPPED, f"worker {pid} stopped ({name})", "info")
        hint = (" -- likely the kernel's out-of-memory killer (check dmesg) or an operator"
                if sig == signal.SIGKILL else "")
        return ExitVerdict(Reason.EXTERNAL_SIGNAL,
                           f"worker {pid} was killed by {name}, not by the master{hint}", "error")
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code == 0:
        return ExitVerdict(Reason.STOPPED, f"worker {pid} exited", "info")
    if code == EXIT_APP_LOAD_ERROR:
        return ExitVerdict(Reason.APP_LOAD_ERROR,
                           f"worker {pid} failed to load or start the app (its error is above)", "error")
    if code == EXIT_BOOT_ERROR:
        return ExitVerdict(Reason.BOOT_ERROR,
                           f"worker {pid} failed to boot: its post_fork or post_worker_init "
                           f"hook raised (see the traceback above)", "error")
    return ExitVerdict(Reason.CRASHED, f"worker {pid} exited with status {code}", "error")


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


@dataclass(frozen=True)
class Liveness:
    """What the master knows about one worker's heartbeat."""

    pid: int
    last_beat: float
    abort_sent_at: float | None


def timeout_actions(workers: list[Liveness], now: float, timeout: int) -> dict[int, str]:
    """For each worker whose heartbeat lapsed: "abort" (SIGABRT, dumps stacks) first, then
    "kill" (SIGKILL) when the abort has not ended it within ABORT_GRACE seconds."""
    if timeout <= 0:
        return {}
    actions: dict[int, str] = {}
    for worker in workers:
        if worker.abort_sent_at is not None:
            if now - worker.abort_sent_at >= ABORT_GRACE:
                actions[worker.pid] = "kill"
        elif now - worker.last_beat > timeout:
            actions[worker.pid] = "abort"
    return actions


def worker_delta(active: int, desired: int) -> int:
    """Workers to start (positive) or retire (negative)."""
    return desired - active


def respawn_delay(recent_failures: int) -> float:
    """Back off when workers keep dying at once, so a crash loop does not spin the CPU."""
    if recent_failures <= 1:
        return 0.0
    return min(5.0, 0.1 * 2.0 ** (recent_failures - 2))
