"""A real ``redis-server`` as a child process: for ``appserver up`` (``[redis] mode = "local"``)
and for the tests.

It listens on a unix socket only (``--port 0``), keeps its append-only file and its log in the
directory it is given (the run directory: nothing is written into the project), and runs in its
own session, so that a Ctrl-C reaches only ``appserver up``, which stops it by its PID (SIGTERM,
bounded, then SIGKILL).  Readiness is ``redis-cli ping`` answering PONG, within a bounded wait.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

REDIS_INSTALL_HINT = ("redis-server is not installed: [redis] mode = \"local\" runs Debian's "
                      "redis-server (apt-get install redis-server), or set mode = \"url\" with "
                      "the URL of a Redis you run, or mode = \"off\"")
STOP_TIMEOUT = 5.0
UNIX_PATH_MAX = 107  # sun_path's 108 bytes, the NUL included (unix(7))


class RedisError(RuntimeError):
    """redis-server is missing, or did not start; the message says what to do."""


def find_redis() -> tuple[str, str] | None:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


class RedisServer:
    """One redis-server on ``directory/redis.sock``; a context manager that always stops it."""

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        self.directory = directory.absolute()
        self.socket = self.directory / "redis.sock"
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 10.0) -> str:
        found = find_redis()
        if found is None:
            raise RedisError(REDIS_INSTALL_HINT)
        server, cli = found
        if len(os.fsencode(self.socket)) > UNIX_PATH_MAX:
            raise RedisError(f"redis-server's socket {self.socket} is longer than a unix socket "
                             f"path may be ({UNIX_PATH_MAX} bytes): choose a shorter run directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        argv = [server, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--daemonize", "no"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RedisError(f"redis-server exited with status {self.proc.returncode}; see "
                                 f"{self.directory / 'redis.log'}")
            if self.socket.exists() and self.ping(cli):
                return self.url
            if time.monotonic() > deadline:
                self.stop()
                raise RedisError(f"redis-server did not answer PING within {timeout:.0f} s; see "
                                 f"{self.directory / 'redis.log'}")
            time.sleep(0.05)

    def ping(self, cli: str | None = None) -> bool:
        cli = cli or shutil.which("redis-cli") or "redis-cli"
        try:
            done = subprocess.run([cli, "-s", str(self.socket), "ping"], capture_output=True,
                                  timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.stdout.strip() == b"PONG"

    def kill(self) -> None:
        """SIGKILL, as a crash would (the tests' outage)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM by PID, bounded, then SIGKILL; idempotent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
