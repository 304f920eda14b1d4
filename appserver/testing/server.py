"""Run ``appserver serve`` as a real process for a test, and stop it by its PID.

Every wait is bounded; ``stop()`` escalates from the requested signal to SIGKILL, and the master's
workers are killed too if the master itself had to be killed, so a failing test leaves nothing
running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel's choice)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports that were free a moment ago.

    Every port stays bound until all are chosen: ports asked for one at a time can come back
    equal, and two of nginx's ``listen`` lines on one port quietly become one server.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(item) for item in text.split()]


class AppServerProcess:
    """``appserver serve ARGS`` with its error log in ``log_path``."""

    def __init__(self, args: Sequence[str], *, log_path: str | os.PathLike[str],
                 cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.args = list(args)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, wait_for: Sequence[str] = (), workers: int | None = None,
              timeout: float = 15.0) -> AppServerProcess:
        """Start, then wait until each address in ``wait_for`` (``host:port`` or ``unix:path``)
        accepts connections and ``workers`` workers have booted."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "appserver", "serve", "--error-logfile", "-", *self.args],
                cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        for address in wait_for:
            self._wait_connectable(address, deadline)
        if workers:
            self.wait_for_log(r"worker \d+ booted", count=workers, timeout=deadline - time.monotonic())
        return self

    def _wait_connectable(self, address: str, deadline: float) -> None:
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if address.startswith("unix:"):
                    with socket.socket(socket.AF_UNIX) as sock:
                        sock.settimeout(1)
                        sock.connect(address[5:])
                else:
                    host, _, port = address.rpartition(":")
                    socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{address} not accepting:\n{self.log_text()}") from None
                time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern: str, *, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Wait until ``pattern`` matches ``count`` lines of the log; return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = [line for line in self.log_text().splitlines() if regex.search(line)]
            if len(matches) >= count:
                return matches
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} x {pattern!r} not in the log:\n{self.log_text()}")
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop the master (and, if it had to be killed, its workers); return its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            workers = self.worker_pids()
            try:
                self.proc.send_signal(sig)
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                for pid in workers:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        return self.proc.returncode

    def __enter__(self) -> AppServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
