"""The master process: binds once, forks workers, keeps their number, acts on signals.

Design notes
------------
* Signal handlers only append the signal to a queue; ``signal.set_wakeup_fd`` wakes the main loop,
  which drains the queue and acts (gunicorn deadlocked when its handlers logged).
* Every loop pass: act on queued signals, reap children, enforce heartbeats and graceful
  deadlines, then bring the worker count to what is wanted.
* Reload (HUP) re-reads the settings, starts a new generation of workers and retires the old one
  only once every new worker has booted, so requests are never left without a worker; if the new
  code fails to load, the old workers keep serving and the error is logged.  The listening
  sockets stay open throughout.
* Upgrade (USR2) forks and execs a new master that inherits the listening sockets
  (``APPSERVER_FDS``); the operator then sends WINCH (retire our workers) and TERM to the old one.
* Worker deaths are explained truthfully by :func:`appserver.policy.describe_exit`.
* Under systemd the listening sockets may come from socket activation (:mod:`appserver.activation`:
  they are then the binds, kept across reloads), and the master reports its state through
  sd_notify (:mod:`appserver.sdnotify`: READY, RELOADING, STOPPING, STATUS, the watchdog); here
  there are only the calls.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import policy, proctitle, tls
from ._build import BUILD, BUILD_REASON
from .activation import inherited_listeners, take_listen_fds, warn_if_bind_differs
from .config import ConfigError, ServerConfig
from .heartbeat import STOP_RESTART, STOP_SHUTDOWN, Heartbeat
from .hooks import EXIT_BOOT_ERROR, HookFailed, ServerHooks
from .logs import ReopenableStreamHandler, capture_output, check_log_paths, reopen_error_log, setup_error_log
from .metrics.master import MasterMetrics
from .metrics.shm import WorkerCounters
from .sdnotify import ServiceNotifier
from .sockets import FDS_ENV, Listener, bind_all, discard, inherited_sockets
from .upgrade import PARENT_ENV, Upgrader
from .workers import load_worker_class

log = logging.getLogger("appserver.master")

HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCHLD)


class HaltServer(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class WorkerRecord:
    pid: int
    heartbeat: Heartbeat
    generation: int
    spawned_at: float
    age: int = 0                          # spawn number (gunicorn's worker.age)
    retiring_since: float | None = None   # TERM sent: graceful deadline counts from here
    abort_sent_at: float | None = None
    killed: bool = False
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    counters: WorkerCounters | None = None  # its metrics (appserver.metrics), when recorded


class Arbiter:
    def __init__(self, config: ServerConfig, *, reload_config: Callable[[], ServerConfig],
                 hooks: ServerHooks | None = None, app: Any = None) -> None:
        self.config = config
        self.reload_config = reload_config  # loads every source again (HUP)
        self.hooks = hooks or ServerHooks()
        self.app = app
        self.pid = os.getpid()
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 1
        self._num_workers: int | None = None  # set in start(): nworkers_changed(N, None)
        self.spawned = 0
        self.listeners: list[Listener] = []
        self._signals: list[int] = []
        self.stopping = False
        self.pending_reload: tuple[int, ServerConfig, list[Listener]] | None = None
        self._recent_failures = 0
        self._next_spawn_at = 0.0
        self.upgrader = Upgrader(self)
        self.metrics = MasterMetrics(self)
        self.sd = ServiceNotifier(None, None)  # systemd's sd_notify (appserver.sdnotify)
        self.socket_activated = False  # the listeners came from LISTEN_FDS (appserver.activation)

    @property
    def num_workers(self) -> int:
        """The number of workers wanted; every change is announced to nworkers_changed."""
        return self.config.workers if self._num_workers is None else self._num_workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        old, self._num_workers = self._num_workers, value
        self.hooks.nworkers_changed(self, value, old)

    # ---- start ------------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        os.umask(config.umask)
        identity = config.worker_identity
        identity.check()
        proctitle.check(config.proc_name)
        if config.reload_extra_files and not config.reload:
            log.warning("--reload-extra-file has no effect without --reload")
        check_log_paths(config)
        for path in (config.errorlog, config.accesslog):
            if path and path != "-":
                identity.hand_over(path)  # the workers reopen them on USR1
        setup_error_log(config)
        capture_output(config)
        if config.tmp_upload_dir:
            log.debug("tmp_upload_dir %s: accepted and unused (request bodies are streamed to "
                      "the app; gunicorn 27 does not use it either)", config.tmp_upload_dir)
        self.worker_class = load_worker_class(config.effective_worker_class)
        self._check_tls(config)
        self.num_workers = config.workers
        self.hooks.on_starting(self)
        passed = take_listen_fds()
        self.socket_activated = bool(passed)
        self.listeners = inherited_listeners(passed, config.addresses) if passed else bind_all(
            config.addresses, backlog=config.backlog, socket_mode=config.socket_mode,
            socket_group=config.socket_group, inherited=inherited_sockets(),
            reuse_port=config.reuse_port)
        os.environ.pop(FDS_ENV, None)
        self.upgrader.adopt_parent(os.environ.pop(PARENT_ENV, None))
        try:
            self.upgrader.write_pidfile()
        except OSError as exc:
            directory = os.path.dirname(self.upgrader.pidfile or "") or "."
            raise OSError(f"--pid {config.pidfile}: cannot write the pid file: {exc.strerror}; "
                          f"let the server's user write to {directory}, or choose another "
                          f"path") from None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)
        self.metrics.start(config)
        self.sd = ServiceNotifier.from_environ()
        proctitle.set_title("master", config.proc_name)
        log.info("appserver master %d listening on %s (%s, %d workers%s; %s build: %s)",
                 self.pid, ", ".join(str(listener) for listener in self.listeners),
                 config.effective_worker_class, self.num_workers,
                 ", TLS" if tls.enabled(config) else "", BUILD, BUILD_REASON)
        self.hooks.when_ready(self)

    def _check_tls(self, config: ServerConfig) -> None:
        """Build the TLS context once (the workers build their own): a bad file, key or
        cipher list stops the start (or the reload) here, naming the setting and the file."""
        for warning in tls.warnings(config):
            log.warning("%s", warning)
        tls.check(config, self.hooks)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if len(self._signals) < 64:
            self._signals.append(signum)

    def queue_signal(self, signum: int) -> None:
        """Act as if ``signum`` had arrived (the control socket's actions, from its thread)."""
        self._on_signal(signum, None)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    # ---- main loop --------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.start()
        except Exception as exc:
            # Nothing half-started: no listening socket, socket file or pid file is left.
            discard(self.listeners)
            self.listeners = []
            self.metrics.close()
            self.upgrader.remove_pidfile()
            if self.config.errorlog != "-" and any(
                    isinstance(h, ReopenableStreamHandler) for h in logging.getLogger().handlers):
                log.error("cannot start: %s", exc)  # stderr has it too (appserver.cli)
            raise
        try:
            while True:
                while self._signals:
                    self._handle_signal(self._signals.pop(0))
                self.reap()
                if self.stopping:
                    break
                self.check_timeouts()
                self.check_reload()
                self.manage_workers()
                self.metrics.tick()
                self.sd.tick(sum(w.heartbeat.booted for w in self.current()))
                self._sleep(self.sd.sleep_limit(0.5 if self.pending_reload else 1.0))
        except HaltServer as exc:
            log.error("%s", exc)
            self.stop(graceful=False)
            return exc.code
        return 0

    def _sleep(self, timeout: float) -> None:
        if self._signals:
            return
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _handle_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reaped every pass anyway
        name = signal.Signals(sig).name
        log.info("master received %s", name)
        if sig == signal.SIGTERM:
            self.stop(graceful=True)
        elif sig in (signal.SIGINT, signal.SIGQUIT):
            self.stop(graceful=False)
        elif sig == signal.SIGHUP:
            self.reload()
        elif sig == signal.SIGTTIN:
            self.num_workers += 1
            log.info("workers: %d", self.num_workers)
        elif sig == signal.SIGTTOU:
            self.num_workers = max(1, self.num_workers - 1)
            log.info("workers: %d", self.num_workers)
        elif sig == signal.SIGUSR1:
            reopen_error_log()
            self._signal_all(signal.SIGUSR1)
        elif sig == signal.SIGUSR2:
            self.upgrader.upgrade()
        elif sig == signal.SIGWINCH:
            if self.upgrader.child_alive():
                log.info("retiring all workers: the new master %d serves now", self.upgrader.child_pid)
                self.num_workers = 0
                self.pending_reload = None
                for worker in self.current():
                    self.retire(worker, restart=True)
            else:
                log.info("SIGWINCH ignored: no new master is running (sent by a terminal resize?)")

    # ---- workers ----------------------------------------------------------------------------

    def spawn(self, config: ServerConfig, listeners: list[Listener], generation: int) -> None:
        heartbeat = Heartbeat(config.worker_tmp_dir)
        counters = self.metrics.new_counters(config)
        worker_class = load_worker_class(config.effective_worker_class)
        self.spawned += 1
        age = self.spawned
        self.hooks.pre_fork(self, age)
        pid = os.fork()
        if pid == 0:  # the child
            try:
                signal.set_wakeup_fd(-1)
                os.close(self._wake_r)
                os.close(self._wake_w)
                for record in self.workers.values():
                    record.heartbeat.close()
                    if record.counters is not None:
                        record.counters.close()
                self.metrics.close_in_worker()
                worker = worker_class(config, self.app, listeners, heartbeat, generation)
                worker.age, worker.hooks, worker.master = age, self.hooks, self
                worker.counters = counters
                try:
                    self.hooks.post_fork(self, worker)
                except HookFailed:
                    worker.exit(EXIT_BOOT_ERROR)
                worker.run()
            except BaseException:
                log.exception("worker %d failed to start", os.getpid())
            finally:
                os._exit(1)
        self.workers[pid] = WorkerRecord(pid, heartbeat, generation, time.monotonic(), age,
                                         counters=counters)
        self.hooks.workers_changed(self)
        log.debug("spawned worker %d (generation %d)", pid, generation)

    def current(self) -> list[WorkerRecord]:
        """Workers of the serving generation that are not retiring."""
        return [w for w in self.workers.values()
                if w.generation == self.generation and w.retiring_since is None]

    def manage_workers(self) -> None:
        active = sorted(self.current(), key=lambda w: w.spawned_at)
        delta = policy.worker_delta(len(active), self.num_workers)
        if delta < 0:
            for worker in active[:-delta]:
                self.retire(worker)
        elif delta > 0 and time.monotonic() >= self._next_spawn_at:
            for _ in range(delta):
                self.spawn(self.config, self.listeners, self.generation)

    def retire(self, worker: WorkerRecord, sig: int = signal.SIGTERM, *, restart: bool = False) -> None:
        """Stop a worker (TERM: gracefully).  ``restart``: it is being replaced (reload, upgrade),
        which its WebSocket clients hear as close code 1012 rather than 1001."""
        if worker.retiring_since is None:
            worker.retiring_since = time.monotonic()
            worker.heartbeat.set_stop_reason(STOP_RESTART if restart else STOP_SHUTDOWN)
        worker.quick = worker.quick or sig != signal.SIGTERM
        self._kill(worker.pid, sig)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            self._kill(pid, sig)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except OSError as exc:  # pragma: no cover - defensive
                if exc.errno == errno.EINTR:
                    continue
                raise
            if pid == 0:
                return
            if self.upgrader.reaped(pid, status):
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            booted = worker.heartbeat.booted
            try:
                self._explain(worker, status, booted)
            finally:
                worker.heartbeat.close()
            self.hooks.child_exit(self, worker)
            self.hooks.workers_changed(self)

    def _explain(self, worker: WorkerRecord, status: int, booted: bool = False) -> None:
        verdict = policy.describe_exit(
            worker.pid, status, aborted_by_master=worker.abort_sent_at is not None,
            killed_by_master=worker.killed, asked_to_stop=worker.retiring_since is not None,
            timeout=self.config.timeout)
        if verdict.reason in (policy.Reason.APP_LOAD_ERROR, policy.Reason.BOOT_ERROR) \
                and booted:
            # A worker that had loaded the app and booted: the app (or a library) ended the
            # process with a status we use for load or boot errors.  A crash, not a reason to
            # stop.
            code = os.WEXITSTATUS(status)
            verdict = policy.ExitVerdict(
                policy.Reason.CRASHED, f"worker {worker.pid} exited with status {code} after it "
                f"had booted (the app ended it; not a load or boot error)", "error")
        getattr(log, verdict.level)("%s", verdict.message)
        self.metrics.reaped(worker, verdict, worker.heartbeat.stop_reason() == STOP_RESTART)
        if verdict.reason is policy.Reason.STOPPED:
            self._recent_failures = 0
            return
        if self.stopping:
            return
        if verdict.reason in (policy.Reason.APP_LOAD_ERROR, policy.Reason.BOOT_ERROR):
            what = ("failed to load the app" if verdict.reason is policy.Reason.APP_LOAD_ERROR
                    else "failed to boot")
            if self.pending_reload and worker.generation == self.pending_reload[0]:
                self.abandon_reload(f"the new workers {what}")
                return
            if worker.generation > self.generation:
                return  # a sibling in a reload already abandoned: the old workers serve on
            if verdict.reason is policy.Reason.BOOT_ERROR:
                raise HaltServer("a worker failed to boot; stopping (fix the hook, then start "
                                 "again)", code=policy.EXIT_BOOT_ERROR)
            raise HaltServer("the app failed to load; stopping (fix it, then start again)",
                             code=policy.EXIT_APP_LOAD_ERROR)
        if time.monotonic() - worker.spawned_at < 1.0:
            self._recent_failures += 1
        self._next_spawn_at = time.monotonic() + policy.respawn_delay(self._recent_failures)

    def check_timeouts(self) -> None:
        now = time.monotonic()
        timeout = self.config.timeout
        lives = [policy.Liveness(w.pid, w.heartbeat.last_beat(), w.abort_sent_at)
                 for w in self.workers.values() if not w.killed]
        for pid, action in policy.timeout_actions(lives, now, timeout).items():
            worker = self.workers[pid]
            if action == "abort":
                log.error("worker %d has been silent for %.1fs (--timeout %ds): aborting it "
                          "(SIGABRT; its stack follows)", pid, now - worker.heartbeat.last_beat(),
                          timeout)
                worker.abort_sent_at = now
                self._kill(pid, signal.SIGABRT)
            else:
                worker.killed = True
                self._kill(pid, signal.SIGKILL)
        grace = self.config.graceful_timeout + 1.0
        for worker in self.workers.values():
            if worker.retiring_since is not None and not worker.killed \
                    and now - worker.retiring_since > (1.0 if worker.quick else grace):
                worker.killed = True
                self._kill(worker.pid, signal.SIGKILL)

    # ---- reload -----------------------------------------------------------------------------

    def reload(self) -> None:
        if self.pending_reload is not None:
            log.info("a reload is already in progress")
            return
        self.sd.reloading()
        try:
            config = self.reload_config()
            check_log_paths(config)
            load_worker_class(config.effective_worker_class)
            self._check_tls(config)
        except (ConfigError, OSError, Exception) as exc:
            log.error("reload refused, the old settings stay in force: %s", exc)
            self.sd.reloaded(f"reload refused: {exc}")
            return
        if config.preload_app and self.app is not None:
            log.warning("--preload: HUP reloads the settings, not the code (use USR2 for new code)")
        try:
            listeners = self._rebind(config)
        except Exception as exc:
            log.error("reload refused: %s", exc)
            self.sd.reloaded(f"reload refused: {exc}")
            return
        # As gunicorn: the logging is set up again from the new settings (a logconfig file may
        # have changed too); settings that cannot be applied leave the previous logging.
        setup_error_log(config, previous=self.config)
        # Never reuse the number of an abandoned reload whose workers may still be exiting.
        generation = max([self.generation, *(w.generation for w in self.workers.values())]) + 1
        self.pending_reload = (generation, config, listeners)
        self.hooks.on_reload(self)
        for _ in range(config.workers):
            self.spawn(config, listeners, generation)
        log.info("reloading: started %d workers of generation %d", config.workers, generation)

    def _rebind(self, config: ServerConfig) -> list[Listener]:
        if self.socket_activated:  # the service manager's sockets stay the binds (as gunicorn)
            warn_if_bind_differs(self.listeners, config.addresses)
            return list(self.listeners)
        kept = {str(listener.address): listener for listener in self.listeners}
        result = []
        try:
            for address in config.addresses:
                listener = kept.get(str(address))
                if listener is None:
                    listener = bind_all([address], backlog=config.backlog,
                                        socket_mode=config.socket_mode,
                                        socket_group=config.socket_group,
                                        reuse_port=config.reuse_port)[0]
                result.append(listener)
        except BaseException:
            discard(listener for listener in result if listener not in self.listeners)
            raise
        return result

    def check_reload(self) -> None:
        if self.pending_reload is None:
            return
        generation, config, listeners = self.pending_reload
        new = [w for w in self.workers.values() if w.generation == generation]
        if len(new) < config.workers or not all(w.heartbeat.booted for w in new):
            return
        old = [w for w in self.workers.values() if w.generation != generation]
        for worker in old:
            self.retire(worker, restart=True)
        for listener in self.listeners:
            if listener not in listeners:
                listener.close(unlink=True)
        self.config, self.listeners, self.generation = config, listeners, generation
        self.num_workers = config.workers
        self.pending_reload = None
        log.info("reloaded: generation %d serves, %d old workers retiring", generation, len(old))
        self.sd.reloaded()

    def abandon_reload(self, why: str) -> None:
        assert self.pending_reload is not None
        generation, _, listeners = self.pending_reload
        self.pending_reload = None
        for worker in [w for w in self.workers.values() if w.generation == generation]:
            self.retire(worker, signal.SIGQUIT)
        for listener in listeners:
            if listener not in self.listeners:
                listener.close(unlink=True)
        log.error("reload abandoned (%s); the old workers keep serving", why)
        self.sd.reloaded(f"reload abandoned ({why}); the old workers serve")

    # ---- stop -------------------------------------------------------------------------------

    def stop(self, graceful: bool) -> None:
        self.stopping = True
        self.sd.stopping(graceful, self.upgrader.child_pid if self.upgrader.child_alive() else 0)
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        for worker in list(self.workers.values()):
            self.retire(worker, sig)
        limit = time.monotonic() + (self.config.graceful_timeout + 2.0 if graceful else 3.0)
        while self.workers and time.monotonic() < limit:
            while self._signals:
                sig_now = self._signals.pop(0)
                if sig_now in (signal.SIGINT, signal.SIGQUIT) and graceful:
                    log.info("quick stop requested during the graceful stop")
                    graceful = False
                    for worker in list(self.workers.values()):
                        self.retire(worker, signal.SIGQUIT)
                    limit = min(limit, time.monotonic() + 3.0)
            self.reap()
            self.check_timeouts()
            self.sd.feed_watchdog()
            self._sleep(0.1)
        for worker in list(self.workers.values()):
            self._kill(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.workers and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)
        unlink = not self.upgrader.shares_sockets()
        for listener in self.listeners:
            listener.close(unlink=unlink)
        self.upgrader.remove_pidfile()
        self.metrics.close()
        self.sd.close()
        log.info("master %d stopped", self.pid)
        self.hooks.on_exit(self)


def run_master(config: ServerConfig, *, reload_config: Callable[[], ServerConfig],
               hooks: ServerHooks | None = None, app: Any = None) -> int:
    arbiter = Arbiter(config, reload_config=reload_config, hooks=hooks, app=app)
    code = arbiter.run()
    sys.stdout.flush()
    return code
