"""The master's side: counters for each new worker, totals when one ends, the two listeners.

Design notes
------------
The metrics listener and the control socket run in daemon threads of the master (see
:mod:`.listener` and :mod:`.control`); the master's own loop stays as it was, so a slow or
stalled client can never delay signal handling, reaping or heartbeat checks.  The threads only
read the master's state (under :attr:`.totals.Totals.lock` where a worker's end changes it) and
ask for actions by queueing the signal the action stands for, so a command and its signal do
the same thing.  A thread of the master does not exist in a forked worker, and the worker never
takes the locks those threads use; the listening sockets are closed in the worker right after
the fork.

A listener that cannot be bound at start is an error, except while the master is the new master
of an upgrade (USR2) and the old one still holds the address: it is then bound once the old
master has gone (tried every second from the loop).  A control socket held by an unrelated
running master is left to it the same way: it is taken only once free.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from ..binds import parse_bind
from ..sockets import BindError, Listener, bind_all
from .shm import WorkerCounters
from .totals import Totals, restart_reason

if TYPE_CHECKING:
    from ..arbiter import Arbiter, WorkerRecord
    from ..config import ServerConfig
    from ..policy import ExitVerdict
    from .listener import ThreadedServer

log = logging.getLogger("appserver.master")


def default_control_path() -> str:
    """gunicorn 27's rule with our name: $XDG_RUNTIME_DIR/appserver.ctl, else
    ~/.appserver/appserver.ctl."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "appserver.ctl")
    return os.path.join(os.path.expanduser("~"), ".appserver", "appserver.ctl")


def control_path(config: ServerConfig) -> str | None:
    if config.control_socket_disable:
        return None
    return config.control_socket or default_control_path()


class MasterMetrics:
    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.totals = Totals()
        self.recording = False
        self.sockets: list[socket.socket] = []
        self._pending: dict[str, str] = {}   # what -> address still to bind
        self._next_try = 0.0
        self._threads_started: list[ThreadedServer] = []
        self.last_scrape_seconds = 0.0

    # ---- start and stop ---------------------------------------------------------------------

    def start(self, config: ServerConfig) -> None:
        """Bind and serve (called once the master's listeners are bound)."""
        path = control_path(config)
        # The workers count only for --metrics-bind: the control socket alone (on by default)
        # shows what the master knows, and costs the request path nothing.
        self.recording = bool(config.metrics_bind)
        if config.metrics_bind:
            self._pending["metrics"] = config.metrics_bind
        if path:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                log.warning("control socket %s: cannot create %s (%s); no control socket",
                            path, directory, exc.strerror)
            else:
                self._pending["control"] = f"unix:{path}"
        self._bind_pending(first=True)

    def tick(self) -> None:
        """From the master's loop: bind what was held by another master at start."""
        if self._pending and time.monotonic() >= self._next_try:
            self._bind_pending(first=False)

    def _bind_pending(self, first: bool) -> None:
        self._next_try = time.monotonic() + 1.0
        for what, address in list(self._pending.items()):
            try:
                listener = self._bind(what, address)
            except BindError as exc:
                if not first:
                    continue
                upgrading = self.arbiter.upgrader.parent_alive()
                if what == "metrics" and not upgrading:
                    raise BindError(f"--metrics-bind {exc}") from None
                log.warning("%s %s; bound once it is free", "--metrics-bind" if what == "metrics"
                            else "control socket", exc)
                continue
            del self._pending[what]
            self._serve(what, listener)

    def _bind(self, what: str, address: str) -> Listener:
        config = self.arbiter.config
        mode = config.control_socket_mode if what == "control" else config.socket_mode
        listener = bind_all([parse_bind(address)], backlog=64, socket_mode=mode,
                            socket_group=None if what == "control" else config.socket_group)[0]
        listener.sock.set_inheritable(False)
        return listener

    def _serve(self, what: str, listener: Listener) -> None:
        from .control import ControlServer  # noqa: PLC0415
        from .listener import MetricsServer  # noqa: PLC0415

        server = (MetricsServer if what == "metrics" else ControlServer)(listener, self)
        self.sockets.append(listener.sock)
        self._threads_started.append(server)
        server.start()
        log.info("%s on %s", "metrics (GET /metrics)" if what == "metrics" else "control socket",
                 listener.address)

    def close(self) -> None:
        for server in self._threads_started:
            server.close()
        self._threads_started.clear()

    def close_in_worker(self) -> None:
        """In a new worker, right after the fork: the listening sockets are the master's."""
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass

    # ---- workers ----------------------------------------------------------------------------

    def new_counters(self, config: ServerConfig) -> WorkerCounters | None:
        return WorkerCounters(config.worker_tmp_dir) if self.recording else None

    def reaped(self, worker: WorkerRecord, verdict: ExitVerdict, stop_for_restart: bool) -> None:
        """A worker ended: fold its counters, and count its restart with the reason."""
        counters = worker.counters
        with self.totals.lock:
            if counters is not None:
                self.totals.fold(counters)
                worker.counters = None
                counters.close()
            if self.arbiter.stopping:
                return
            reason = restart_reason(verdict.reason, asked_to_stop=worker.retiring_since is not None,
                                    stop_for_restart=stop_for_restart,
                                    retiring=worker.heartbeat.retiring())
            if reason is not None:
                self.totals.restarted(worker.pid, worker.generation, reason, verdict.message)
