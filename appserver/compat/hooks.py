"""gunicorn's server hooks over :class:`appserver.hooks.ServerHooks`.

Each moment looks its hook up in the settings in force (so a HUP that changes the config file
changes the hooks), wraps the server's objects in :mod:`.views` and calls it.  A hook that raises
is logged with its traceback and the server carries on -- except where gunicorn stops too:

* on_starting, when_ready: the server does not start (gunicorn's exception leaves ``start()``);
* post_fork, post_worker_init: the worker cannot boot, and the master stops (gunicorn's
  WORKER_BOOT_ERROR);
* pre_request: the request gets a 500, as an app error would (gunicorn's handle_error).

gunicorn also dies of an exception in pre_fork, child_exit, nworkers_changed and on_reload (they
run unguarded in its main loop); we log those and keep serving, deliberately.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import logconfig
from ..config import ServerConfig, positional_arity
from ..hooks import HookFailed, RequestHooks, ServerHooks
from . import glogger
from .statsd import WORKERS, StatsdClient, StatsdLogHandler
from .views import CfgView, RequestView, ResponseView, ServerView, WorkerView

if TYPE_CHECKING:
    import ssl

    from ..arbiter import Arbiter, WorkerRecord
    from ..http.events import RequestHead
    from ..workers.base import Worker
    from ..wsgi import Response

log = logging.getLogger("appserver.hooks")


def call(config: ServerConfig, name: str, *args: Any, fatal: bool = False) -> None:
    """Call the hook ``name`` if it is set; log what it raises (and raise HookFailed if fatal)."""
    hook = getattr(config, name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("the %s hook raised%s", name, "" if not fatal else
                      " (gunicorn treats this as fatal, and so do we)")
        if fatal:
            raise HookFailed(name) from None


class GunicornHooks(ServerHooks):
    """Hooks from the settings; views are built only when a hook is set."""

    def __init__(self) -> None:
        self._server: ServerView | None = None
        self.statsd: StatsdClient | None = None
        logconfig.use_logger_class(glogger.build)  # gunicorn's logger_class (see .glogger)

    def _view(self, arbiter: Arbiter) -> ServerView:
        if self._server is None or self._server._arbiter is not arbiter:
            self._server = ServerView(arbiter)
        return self._server

    def _master(self, arbiter: Arbiter, name: str, *args: Any, fatal: bool = False) -> None:
        if getattr(arbiter.config, name) is not None:
            call(arbiter.config, name, self._view(arbiter), *args, fatal=fatal)

    def _recorded(self, arbiter: Arbiter, pid: int | str, age: int) -> WorkerView:
        return WorkerView(pid=pid, ppid=arbiter.pid, age=age, config=lambda: arbiter.config,
                          alive=lambda: False)

    # ---- master --------------------------------------------------------------------------

    def on_starting(self, arbiter: Arbiter) -> None:
        self._start_statsd(arbiter.config)
        self._master(arbiter, "on_starting", fatal=True)

    def when_ready(self, arbiter: Arbiter) -> None:
        self._master(arbiter, "when_ready", fatal=True)

    def on_reload(self, arbiter: Arbiter) -> None:
        self._master(arbiter, "on_reload")

    def pre_fork(self, arbiter: Arbiter, age: int) -> None:
        if arbiter.config.pre_fork is not None:
            self._master(arbiter, "pre_fork", self._recorded(arbiter, "[booting]", age))

    def child_exit(self, arbiter: Arbiter, record: WorkerRecord) -> None:
        if arbiter.config.child_exit is not None:
            self._master(arbiter, "child_exit", self._recorded(arbiter, record.pid, record.age))

    def nworkers_changed(self, arbiter: Arbiter, new: int, old: int | None) -> None:
        self._master(arbiter, "nworkers_changed", new, old)

    def pre_exec(self, arbiter: Arbiter) -> None:
        self._master(arbiter, "pre_exec")

    def on_exit(self, arbiter: Arbiter) -> None:
        self._master(arbiter, "on_exit")

    # ---- worker --------------------------------------------------------------------------

    def post_fork(self, arbiter: Arbiter, worker: Worker) -> None:
        logconfig.close_on_exec()  # where gunicorn's worker calls its logger's
        if worker.config.post_fork is not None:
            call(worker.config, "post_fork", self._view(arbiter), WorkerView.of(worker),
                 fatal=True)

    def post_worker_init(self, worker: Worker) -> None:
        if worker.config.post_worker_init is not None:
            call(worker.config, "post_worker_init", WorkerView.of(worker), fatal=True)

    def worker_int(self, worker: Worker) -> None:
        if worker.config.worker_int is not None:
            call(worker.config, "worker_int", WorkerView.of(worker))

    def worker_abort(self, worker: Worker) -> None:
        if worker.config.worker_abort is not None:
            call(worker.config, "worker_abort", WorkerView.of(worker))

    def worker_exit(self, arbiter: Arbiter, worker: Worker) -> None:
        if worker.config.worker_exit is not None:
            call(worker.config, "worker_exit", self._view(arbiter), WorkerView.of(worker))

    def handles_abort(self, worker: Worker) -> bool:
        return worker.config.worker_abort is not None

    def request_hooks(self, worker: Worker) -> RequestHooks | None:
        config = worker.config
        if config.pre_request is None and config.post_request is None and self.statsd is None:
            return None
        return WorkerRequestHooks(config, WorkerView.of(worker), self.statsd)

    def ssl_context(self, config: ServerConfig,
                    factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """gunicorn's ssl_context(config, default_ssl_context_factory): its return value is the
        context.  Its errors are not caught here: the caller reports them (appserver.tls)."""
        if config.ssl_context is None:
            return factory()
        context: ssl.SSLContext = config.ssl_context(CfgView(lambda: config), factory)
        return context

    # ---- StatsD (gunicorn's instrumentation rides the same moments) --------------------------

    def _start_statsd(self, config: ServerConfig) -> None:
        """In the master, before the first fork: the workers inherit the client's socket (one
        datagram socket may be shared by processes) and its log handler."""
        if self.statsd is not None or not config.statsd_host:
            return
        logger = logconfig.logger_object()
        if isinstance(logger, glogger.GunicornLogger) and logger.sends_statsd:
            return  # a subclass of gunicorn's StatsD logger sends the metrics itself
        self.statsd = StatsdClient(config.statsd_host, config.statsd_prefix, config.dogstatsd_tags)
        logging.getLogger("appserver").addHandler(StatsdLogHandler(self.statsd))

    def workers_changed(self, arbiter: Arbiter) -> None:
        if self.statsd is not None:
            self.statsd.gauge(WORKERS, len(arbiter.workers))


class WorkerRequestHooks:
    """pre_request and post_request of one worker (see :class:`appserver.hooks.RequestHooks`),
    and its StatsD request metrics."""

    def __init__(self, config: ServerConfig, worker: WorkerView,
                 statsd: StatsdClient | None = None) -> None:
        self.worker = worker
        self.statsd = statsd
        self._pre = config.pre_request
        self._post: Callable[..., Any] | None = config.post_request
        # gunicorn lets post_request take (worker, req), (worker, req, environ) or all four.
        self._post_arity = positional_arity(self._post) if self._post is not None else 0

    def pre_request(self, head: RequestHead, environ: dict[str, Any]) -> None:
        if self._pre is not None:
            self._pre(self.worker, RequestView(head))  # raising is the app's error: a 500

    def post_request(self, head: RequestHead, environ: dict[str, Any],
                     response: Response, duration: float) -> None:
        if self.statsd is not None:
            self.statsd.request(response.status, duration)
        if self._post is None:
            return
        args = (self.worker, RequestView(head), environ, ResponseView(response))
        try:
            self._post(*args[:self._post_arity])
        except Exception:
            log.exception("the post_request hook raised")
