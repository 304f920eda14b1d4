"""Starting and stopping the processes of a run, each by its own PID and always with a timeout.

Design note: every process the benchmark starts (nginx, each server, wrk) is a direct child
started in a new session, so its PID is also the ID of a process group that holds only it and
its own children (a server's workers).  Stopping sends a polite signal to that PID, waits a
bounded time, then SIGKILLs the group the PID leads, so a hung master cannot leave orphaned
workers holding the socket.  Nothing here ever looks processes up by name.  Live processes are
tracked in a registry that an ``atexit`` hook drains, so an exception or Ctrl-C anywhere still
stops them; SIGTERM and SIGHUP are turned into SystemExit for the same reason.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

_LIVE: dict[int, ManagedProcess] = {}


class ManagedProcess:
    """A child process with a name for messages, an output file and a bounded stop."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path,
                 stop_signal: signal.Signals = signal.SIGTERM, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_signal = stop_signal
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=cwd, env=dict(env) if env is not None else None, start_new_session=True)
        self.pid = self.popen.pid
        self.left_orphans = False
        _LIVE[self.pid] = self

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop politely, then by force; returns the exit status (None if it would not die).

        Afterwards ``left_orphans`` tells whether descendants outlived the process (a master
        that exits before its workers); they are killed too.
        """
        try:
            if self.alive():
                self._signal(self.stop_signal)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            self.left_orphans = self.popen.poll() is not None and self._group_alive()
            # Sweep the group: the process itself if it hung, or what it left behind.
            self._kill_group()
            self.popen.wait(5.0)
            return self.popen.returncode
        except subprocess.TimeoutExpired:
            return None
        finally:
            _LIVE.pop(self.pid, None)
            self._log.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _kill_group(self) -> None:
        # The group was created by start_new_session for this PID alone, so killing it reaches
        # this process's own descendants and nothing else.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (a server's workers), from the parent links in /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_all() -> None:
    """Stop every process still running, newest first (servers before the nginx in front)."""
    for proc in reversed(list(_LIVE.values())):
        proc.stop(timeout=5.0)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Make sure children are stopped however the benchmark ends."""
    atexit.register(stop_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
