"""The sd_notify protocol: what the master tells systemd (``Type=notify`` services).

The protocol (sd_notify(3)): a service started with ``NOTIFY_SOCKET`` in its environment sends
datagrams of ``KEY=VALUE`` lines to that unix socket -- an absolute path, or an abstract address
written with a leading ``@``.  No library is needed (gunicorn speaks it in twenty lines too); this
module keeps the parsing, the sending and the rules of *when* out of the arbiter, which only calls:

* :meth:`ServiceNotifier.tick` every pass of the master's loop: ``READY=1`` once the first worker
  of the serving generation has booted (it loaded the app, ran post_worker_init and the ASGI
  lifespan startup, and its next step is ``accept()`` on the listening sockets; connections that
  arrive before are queued by the kernel, never refused), ``STATUS=serving N workers`` whenever N
  changes, and ``WATCHDOG=1`` when it is due;
* :meth:`reloading` / :meth:`reloaded` around a HUP: ``RELOADING=1`` with ``MONOTONIC_USEC=`` (what
  systemd 253's ``Type=notify-reload`` needs to match the reload), then ``READY=1`` once the new
  generation serves -- or once the reload was refused or abandoned, since the old workers serve
  on and systemd must not wait in "reloading" for ever;
* :meth:`stopping` on a graceful or fast stop: ``STOPPING=1``; or, when a new master started by
  USR2 is running, ``MAINPID=<new master>`` instead: the service goes on, in the new process.

Who may notify: systemd's default ``NotifyAccess=main`` accepts messages from the main process
only, so the master takes ``NOTIFY_SOCKET`` and the ``WATCHDOG_*`` variables out of its
environment at start (workers and the app never see them, and cannot claim READY for the
service); an upgrade hands them to the new master explicitly (:meth:`environ_for_new_master`).

The watchdog: with ``WATCHDOG_USEC`` set (and ``WATCHDOG_PID``, when present, naming this
process), ``WATCHDOG=1`` goes out every half interval, as sd_watchdog_enabled(3) advises; the
master's loop sleeps no longer than :meth:`sleep_limit`.  A master whose loop is stuck stops
feeding it, and systemd restarts the service.

Sending never blocks and never raises: the socket is non-blocking, and a failure is logged once
(a full or vanished notify socket must not stop a server that is serving).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("appserver.master")

NOTIFY_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


class NotifyAddressError(ValueError):
    """NOTIFY_SOCKET names no address this module can send to."""


def parse_address(value: str) -> str | bytes:
    """``NOTIFY_SOCKET`` -> the address for ``sendto``: a path, or bytes for an abstract socket."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()  # Linux's abstract namespace
    if value.startswith("/"):
        return value
    raise NotifyAddressError(
        f"NOTIFY_SOCKET={value!r} is neither an absolute path nor an abstract address (@name); "
        f"(vsock: addresses are not supported); the service manager's notifications are off")


def message(**fields: str | int) -> bytes:
    """``KEY=VALUE`` lines; a value never holds a newline (it would start another field)."""
    return "".join(f"{key}={str(value).replace(chr(10), ' ')}\n"
                   for key, value in fields.items()).encode()


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: MutableMapping[str, str], pid: int) -> float | None:
    """Seconds between two WATCHDOG=1 (half of WATCHDOG_USEC), or None when the watchdog is off
    or meant for another process; a malformed value is logged, not guessed at."""
    usec = environ.get(WATCHDOG_USEC_ENV)
    if not usec:
        return None
    owner = environ.get(WATCHDOG_PID_ENV)
    if owner and owner != str(pid):
        log.info("systemd watchdog: WATCHDOG_PID=%s is not this master (%d); not feeding it",
                 owner, pid)
        return None
    if not usec.isdigit() or int(usec) == 0:
        log.warning("systemd watchdog: WATCHDOG_USEC=%r is not a positive number of "
                    "microseconds; the watchdog is not fed", usec)
        return None
    return int(usec) / 2e6


class ServiceNotifier:
    """The master's side of sd_notify; every method is a no-op without NOTIFY_SOCKET."""

    def __init__(self, address: str | bytes | None, watchdog: float | None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None
        self.ready = False
        self.reloading_now = False
        self._status = ""
        self._next_ping = 0.0
        self._failed = False
        self._sock: socket.socket | None = None
        self._raw: dict[str, str] = {}  # the variables taken, for a new master (USR2)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None,
                     pid: int | None = None) -> ServiceNotifier:
        """Take NOTIFY_SOCKET and WATCHDOG_* out of ``environ`` (os.environ): the children this
        master forks never inherit them."""
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        raw = {key: env.pop(key) for key in (NOTIFY_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)
               if key in env}
        value = raw.get(NOTIFY_ENV, "")
        address: str | bytes | None = None
        if value:
            try:
                address = parse_address(value)
            except NotifyAddressError as exc:
                log.warning("%s", exc)
        notifier = cls(address, watchdog_interval(raw, pid) if address is not None else None)
        notifier._raw = raw
        if address is not None:
            log.info("systemd notify socket %s%s", value,
                     f"; watchdog fed every {notifier.watchdog:g}s" if notifier.watchdog else "")
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # ---- sending ----------------------------------------------------------------------------

    def send(self, **fields: str | int) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                                           | socket.SOCK_NONBLOCK)
            self._sock.sendto(message(**fields), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True  # once: a failing socket stays failing, every second
                log.warning("systemd notify socket: cannot send %s: %s", ",".join(fields),
                            exc.strerror or exc)
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ---- what the master calls --------------------------------------------------------------

    def tick(self, booted: int, now: float | None = None) -> None:
        """Every loop pass: ``booted`` workers of the serving generation have booted."""
        if self.address is None:
            return
        status = f"serving {booted} worker{'' if booted == 1 else 's'}"
        if not self.ready and booted > 0 and not self.reloading_now:
            self.ready = True
            self._status = status
            self.send(READY=1, STATUS=status)
        elif self.ready and not self.reloading_now and status != self._status:
            self._status = status
            self.send(STATUS=status)
        self.feed_watchdog(now)

    def feed_watchdog(self, now: float | None = None) -> None:
        if self.watchdog is None:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog
            self.send(WATCHDOG=1)

    def sleep_limit(self, timeout: float) -> float:
        """How long the master may sleep without missing a watchdog ping."""
        if self.watchdog is None:
            return timeout
        return max(0.0, min(timeout, self._next_ping - time.monotonic()))

    def reloading(self) -> None:
        self.reloading_now = True
        self._status = "reloading"
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading")

    def reloaded(self, outcome: str = "") -> None:
        """The reload is over (``outcome`` says why, when it did not take effect)."""
        if not self.reloading_now:
            return
        self.reloading_now = False
        self.ready = True
        self._status = outcome or "reloaded"
        self.send(READY=1, STATUS=self._status)

    def stopping(self, graceful: bool, new_master: int = 0) -> None:
        if new_master:
            # An upgrade hands the service over: the new master is the main process from now
            # on, and this one's exit is not the service's.
            self.send(MAINPID=new_master, STATUS=f"upgraded: master {new_master} serves")
        else:
            self.send(STOPPING=1, STATUS="stopping" if graceful else "stopping (fast)")

    def environ_for_new_master(self, pid: int) -> dict[str, str]:
        """The variables a new master (USR2) needs to notify in its turn: NOTIFY_SOCKET, and the
        watchdog with WATCHDOG_PID naming it (systemd accepts its messages once it is the main
        process, which :meth:`stopping` tells systemd when the old master leaves)."""
        env = dict(self._raw)
        if WATCHDOG_USEC_ENV in env:
            env[WATCHDOG_PID_ENV] = str(pid)
        return env
