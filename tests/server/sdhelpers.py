"""What systemd would be for the server under test: a notify socket that records sd_notify
messages, and a launcher that passes a listening socket held by the test as LISTEN_FDS.

The notify socket is a plain unix datagram socket, read by a thread into a list of
(monotonic time, {KEY: VALUE}) pairs; tests wait for messages with a deadline.  The launcher is
what a .socket unit does for a service: the test owns the listening socket for the whole test, and
each server process gets it as descriptor 3 (a small exec wrapper puts it there, sets LISTEN_FDS and
LISTEN_PID to its own pid, and execs the server, which keeps that pid).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .harness import Timeout

Message = dict[str, str]

# Runs in the child: the passed fd becomes 3, then exec (same pid, so LISTEN_PID matches).
ACTIVATE = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.set_inheritable(3, True)\n"
    "os.environ['LISTEN_FDS'] = '1'\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.environ['LISTEN_FDNAMES'] = 'appserver.socket'\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def activate_argv(fd: int, argv: list[str]) -> list[str]:
    """``argv`` run with ``fd`` passed as socket activation's descriptor 3 (use pass_fds=(fd,))."""
    return [sys.executable, "-c", ACTIVATE, str(fd), *argv]


def parse(datagram: bytes) -> Message:
    fields: Message = {}
    for line in datagram.decode().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    return fields


class NotifyListener:
    """A test-owned NOTIFY_SOCKET: ``address`` goes into the server's environment."""

    def __init__(self, path: Path | None = None, *, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract is not None:
            self.sock.bind(b"\0" + abstract.encode())
            self.address = f"@{abstract}"
        else:
            assert path is not None
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, Message]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name="notify")
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), parse(data)))

    def snapshot(self) -> list[Message]:
        with self._lock:
            return [m for _, m in self.messages]

    def times(self, key: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if key in m]

    def wait(self, predicate: Callable[[Message], bool], what: str, timeout: float = 20.0,
             after: int = 0) -> int:
        """Index of the first message from index ``after`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.snapshot()[after:], start=after):
                if predicate(message):
                    return i
            if time.monotonic() > deadline:
                raise Timeout(f"no sd_notify message {what} within {timeout}s; got "
                              f"{self.snapshot()}")
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def held_unix_socket(path: str, backlog: int = 256) -> socket.socket:
    """A listening unix socket held by the test, as a .socket unit holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    os.set_inheritable(sock.fileno(), True)
    return sock
