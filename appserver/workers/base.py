"""What every worker class does in the child process: boot, signals, heartbeat, recycling.

Design notes
------------
* Signal handlers only set flags (and wake the loop through ``signal.set_wakeup_fd``); the loop
  acts.  gunicorn once logged from inside handlers and deadlocked on the logging lock.
* TERM: graceful (stop accepting, finish in-flight requests within ``graceful_timeout``, exit 0).
  INT/QUIT: quick (exit now).  USR1: reopen the log files.  ABRT (sent by the master when the
  heartbeat lapses): faulthandler prints every thread's stack to the error log and the process
  dies of SIGABRT, which the master reports as a timeout kill.  HUP and WINCH are for the master.
* Recycling: after ``max_requests`` (+ jitter) or above ``max_worker_memory``, the worker stops
  accepting, finishes what it has and exits 0; the master starts a replacement.  The listening
  sockets stay open in the master, so connections queue in the backlog meanwhile, never refused.
"""

from __future__ import annotations

import faulthandler
import inspect
import logging
import os
import random
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Any, NoReturn

from .. import spew, tls
from ..asgi import app_kind_error
from ..config import ServerConfig
from ..heartbeat import RETIRE_MAX_REQUESTS, RETIRE_MEMORY, STOP_RESTART, Heartbeat
from ..hooks import EXIT_BOOT_ERROR, HookFailed, ServerHooks
from ..loader import app_name, load_wsgi_app, prepare_import_path
from ..logs import AccessLog, reopen_error_log
from ..proctitle import set_title
from ..reloader import start_reloader
from ..sockets import Listener
from ..websocket.blocking import GOING_AWAY, SERVICE_RESTART, Registry
from ..wsgi import WSGIContext
from .pump import ServingState

if TYPE_CHECKING:
    import ssl

    from ..arbiter import Arbiter
    from ..metrics.shm import WorkerCounters

log = logging.getLogger("appserver.worker")

# Exit statuses the master understands (see appserver.policy).
EXIT_OK = 0
EXIT_APP_LOAD_ERROR = 4

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# How often tick() asks whether the master is still there (getppid).  tick() runs after every
# request in the sync worker: a syscall per request for an answer that a second's delay does not
# change.  The loops' idle turns are up to a second apart, so an orphan still notices within
# about a second.
PARENT_CHECK_INTERVAL = 0.5


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (one small read)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class Worker:
    """Base class: subclasses implement :meth:`serve` (the accept/serve loop)."""

    multithread = False
    uses_keep_alive = True
    holds_connections = False  # can serve WebSockets (a connection outlives its request)

    def __init__(self, config: ServerConfig, app: Any, listeners: list[Listener],
                 heartbeat: Heartbeat, generation: int) -> None:
        self.config = config
        self.app = app
        self.listeners = listeners
        self.heartbeat = heartbeat
        self.generation = generation
        self.ppid = os.getppid()
        self.pid = os.getpid()
        self.alive = True           # False: graceful stop requested
        self.reopen_logs = False
        self.retire_reason = ""
        self._next_memory_check = 0.0
        self._next_parent_check = 0.0
        jitter = random.randint(0, config.max_requests_jitter) if config.max_requests else 0
        self.max_requests = config.max_requests + jitter if config.max_requests else 0
        self.state: ServingState
        # Set by the master after the fork: the spawn number, the hooks, the master's copy.
        self.age = 0
        self.hooks = ServerHooks()
        self.master: Arbiter | None = None
        self.counters: WorkerCounters | None = None  # set by the master when metrics are on
        self._exiting = False
        self._fault_stream: IO[str] = sys.stderr
        self.tls_context: ssl.SSLContext | None = None

    # ---- boot -----------------------------------------------------------------------------

    def run(self) -> None:
        """The child's main: never returns."""
        code = EXIT_OK
        try:
            self.patch()
            self._install_signals()
            # After the patching (green SSLContext), before giving up root (the key file).
            self.tls_context = self._tls_context()
            # As gunicorn: after post_fork (which ran as the master's user), before the app.
            self.config.worker_identity.assume()
            if self.config.spew:
                spew.install()
            if self.app is None:
                try:
                    prepare_import_path(self.config)
                    self.app = load_wsgi_app(self.config)
                except BaseException:
                    log.exception("worker %d failed to load the app %s", self.pid,
                                  app_name(self.config))
                    self.exit(EXIT_APP_LOAD_ERROR)
            self.app = self.made_app(self.app)
            refusal = self.kind_error(self.app) or self.unsupported_for(self.app)
            if refusal:
                log.error("worker %d cannot serve %s: %s", self.pid, self.config.wsgi_app, refusal)
                self.exit(EXIT_APP_LOAD_ERROR)
            self.state = ServingState(
                self.config, self.app, AccessLog(self.config),
                WSGIContext(multithread=self.multithread, multiprocess=self.config.workers > 1,
                            trusted_ips=self.config.forwarded_allow_ips,
                            forwarded_hops=self.config.forwarded_hops,
                            scheme_headers=self.config.secure_scheme_headers,
                            forwarder_headers=self.config.forwarder_headers,
                            header_map=self.config.header_map,
                            root_path=self.config.root_path),
                self.heartbeat.beat, keep_alive=self.uses_keep_alive,
                max_requests=self.max_requests)
            if self.tls_context is not None:
                self.state.tls = self.tls_context
                self.state.wsgi.scheme = "https"
            if self.config.reload:
                start_reloader(self.ppid, extra=self.config.reload_extra_files)
            if self.holds_connections:
                self.state.websockets = Registry(self.config.websocket_max_connections,
                                                 self.config.websocket_ping_interval,
                                                 self.config.websocket_idle_timeout)
            self.state.wsgi.hooks = self.hooks.request_hooks(self)
            if self.counters is not None:
                self._record_metrics(self.counters)
            try:
                self.hooks.post_worker_init(self)
            except HookFailed:
                self.exit(EXIT_BOOT_ERROR)
            self.before_serving()
            self.heartbeat.mark_booted()
            set_title("worker", self.config.proc_name)
            log.info("worker %d booted (%s, generation %d)", self.pid,
                     self.config.effective_worker_class, self.generation)
            self.serve()
            if self.retire_reason:
                log.info("worker %d retired: %s", self.pid, self.retire_reason)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d crashed", self.pid)
            code = 1
        self.exit(code)

    def _record_metrics(self, counters: WorkerCounters) -> None:
        from ..metrics.recorder import Recorder  # noqa: PLC0415 - only with metrics on

        recorder = Recorder(counters)
        recorder.install()
        self.state.metrics = self.state.access_log.metrics = recorder
        if self.state.websockets is not None:
            self.state.websockets.on_change = recorder.websockets_open

    def exit(self, code: int) -> NoReturn:
        """End the process: worker_exit first (gunicorn calls it on every way out), then the
        logs are flushed.  Never returns."""
        try:
            if not self._exiting:
                self._exiting = True
                if self.master is not None:
                    self.hooks.worker_exit(self.master, self)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
            os._exit(code)

    def _tls_context(self) -> ssl.SSLContext | None:
        """This worker's TLS context (None without TLS); the master checked the settings, so a
        failure here is rare (a file changed since): the worker cannot boot."""
        try:
            return tls.build_context(self.config, self.hooks)
        except Exception as exc:
            log.error("worker %d cannot set up TLS: %s", self.pid, exc,
                      exc_info=not isinstance(exc, tls.TLSError))
            self.exit(EXIT_BOOT_ERROR)

    def made_app(self, app: Any) -> Any:
        """The app to serve, from what the spec named: the asyncio class under ``--interface
        asgi`` awaits the coroutine of an async factory called in the spec (``'main:
        create_app()'``); a failing factory exits as an app that fails to import."""
        return app

    def kind_error(self, app: Any) -> str:
        """Why ``app`` is not of the kind ``--interface`` says ("" when it is); the aiohttp class,
        which takes neither WSGI nor ASGI apps, says it in :meth:`unsupported_for` instead."""
        if inspect.iscoroutine(app):
            app.close()  # never awaited: no "was never awaited" warning
            return ("the app is a coroutine (what an async def factory returns when called): "
                    "only -k asgi and -k aiohttp await an app factory; make the factory a "
                    "plain def")
        return app_kind_error(app, self.config.interface)

    def unsupported_for(self, app: Any) -> str:
        """Why this class cannot serve ``app`` with these settings ("" when it can): checked
        before the worker counts as booted, so the master stops with the reason."""
        return ""

    def before_serving(self) -> None:
        """Last step before the worker counts as booted (the ASGI lifespan startup); a failure
        exits with EXIT_APP_LOAD_ERROR, which stops the master rather than respawning."""

    def patch(self) -> None:
        """Before anything else in the child (the app is not loaded yet): the green worker
        classes monkey-patch the standard library here."""

    def _install_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_quit)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        # On SIGABRT print every thread's stack to the error log, then die of the signal.
        stream = next((h.stream for h in logging.getLogger().handlers
                       if hasattr(h, "stream") and hasattr(h.stream, "fileno")), sys.stderr)
        try:
            faulthandler.enable(file=stream, all_threads=True)
        except (ValueError, OSError):  # a stream without a real descriptor
            faulthandler.enable(all_threads=True)
        if self.hooks.handles_abort(self):
            # worker_abort is Python: a Python handler replaces faulthandler's C one, dumps the
            # stacks itself, runs the hook, then dies of SIGABRT as before (the master's verdict
            # is still "timed out"; it SIGKILLs a hook that hangs).
            self._fault_stream = stream
            signal.signal(signal.SIGABRT, self._on_abort)
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)

    def _on_term(self, signum: int, frame: Any) -> None:
        self.alive = False

    def _on_quit(self, signum: int, frame: Any) -> None:
        # gunicorn runs worker_int in this handler too; the process ends right after, and the
        # master SIGKILLs it one second after a quick stop if a hook hangs.
        self.hooks.worker_int(self)
        self.exit(EXIT_OK)

    def _on_abort(self, signum: int, frame: Any) -> None:
        try:
            faulthandler.dump_traceback(file=self._fault_stream, all_threads=True)
        except (ValueError, OSError):
            pass
        self.hooks.worker_abort(self)
        faulthandler.disable()
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGABRT)

    def _on_usr1(self, signum: int, frame: Any) -> None:
        self.reopen_logs = True

    def drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    # ---- per-iteration housekeeping, called from the serve loops -----------------------------

    def tick(self) -> None:
        """Beat, act on flags, and decide whether to retire.  Cheap: call it every loop."""
        self.heartbeat.beat()
        if self.reopen_logs:
            self.reopen_logs = False
            reopen_error_log()
            self.state.access_log.reopen()
            log.info("worker %d reopened its log files", self.pid)
        now = time.monotonic()
        if now >= self._next_parent_check:
            self._next_parent_check = now + PARENT_CHECK_INTERVAL
            if os.getppid() != self.ppid:
                log.warning("worker %d: the master (pid %d) is gone; stopping", self.pid,
                            self.ppid)
                self.alive = False
        if not self.alive:
            self.state.stopping = True
            return
        self.heartbeat.set_requests(self.state.requests)
        if self.state.stopping and not self.retire_reason:
            self.retire_for_max_requests()
        limit = self.config.max_worker_memory
        if limit and now >= self._next_memory_check:
            self._next_memory_check = now + 1.0
            rss = rss_bytes()
            if rss > limit:
                self.retire_reason = (f"resident memory {rss / (1 << 20):.1f} MiB above "
                                      f"--max-worker-memory {limit / (1 << 20):g} MiB")
                self.state.stopping = True
                self.alive = False
                self.heartbeat.set_retiring(RETIRE_MEMORY)

    def retire_for_max_requests(self) -> None:
        self.retire_reason = f"served {self.state.requests} requests (--max-requests {self.max_requests})"
        self.alive = False
        self.heartbeat.set_retiring(RETIRE_MAX_REQUESTS)

    def close_websockets(self) -> None:
        """On a graceful stop, tell WebSocket clients why (no WSGI server did: 1001 or 1012)."""
        registry = self.state.websockets
        if registry is None:
            return
        restart = self.retire_reason or self.heartbeat.stop_reason() == STOP_RESTART
        code, reason = (SERVICE_RESTART, "service restart") if restart else (GOING_AWAY, "going away")
        count = registry.close_all(code, reason)
        if count:
            log.info("worker %d: sent close %d to %d WebSockets", self.pid, code, count)

    def serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
