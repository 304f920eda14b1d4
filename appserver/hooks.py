"""The moments at which the master and its workers call out: gunicorn's server hooks.

The core calls a :class:`ServerHooks` at each moment with its own objects -- the arbiter, a
worker's spawn number, the worker in its own process -- and this base class does nothing.
:mod:`appserver.compat.hooks` implements it over the hook settings (``post_fork`` ...), wrapping
those objects in the views gunicorn's hooks expect; the command line installs it, so the core
never imports compat.

Requests: :meth:`ServerHooks.request_hooks` gives a worker its :class:`RequestHooks`, or None
when no request hook is set; the request paths keep it on the worker's ``WSGIContext`` and test
it for None once per request, which is all a server without hooks pays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .policy import EXIT_BOOT_ERROR

if TYPE_CHECKING:
    import ssl

    from .arbiter import Arbiter, WorkerRecord
    from .config import ServerConfig
    from .http.events import RequestHead
    from .workers.base import Worker
    from .wsgi import Response

__all__ = ["EXIT_BOOT_ERROR", "HookFailed", "RequestHooks", "ServerHooks"]


class HookFailed(Exception):
    """A hook whose failure gunicorn treats as fatal raised (on_starting, when_ready: the
    server does not start; post_fork, post_worker_init: the worker exits with EXIT_BOOT_ERROR
    and the master stops).  Its traceback has been logged already."""


class RequestHooks(Protocol):
    """pre_request and post_request of one worker."""

    def pre_request(self, head: RequestHead, environ: dict[str, Any]) -> None:
        """Before the app is called; an exception is the app's (a 500)."""

    def post_request(self, head: RequestHead, environ: dict[str, Any],
                     response: Response, duration: float) -> None:
        """After the response and its access log line (``duration``: seconds since the app
        was called); never raises."""


class ServerHooks:
    """No hooks: every moment is a no-op."""

    # master
    def on_starting(self, arbiter: Arbiter) -> None: ...
    def when_ready(self, arbiter: Arbiter) -> None: ...
    def on_reload(self, arbiter: Arbiter) -> None: ...
    def pre_fork(self, arbiter: Arbiter, age: int) -> None: ...
    def child_exit(self, arbiter: Arbiter, record: WorkerRecord) -> None: ...
    def nworkers_changed(self, arbiter: Arbiter, new: int, old: int | None) -> None: ...
    def workers_changed(self, arbiter: Arbiter) -> None:
        """A worker was spawned or reaped (not a gunicorn hook: StatsD's gunicorn.workers)."""
    def pre_exec(self, arbiter: Arbiter) -> None: ...
    def on_exit(self, arbiter: Arbiter) -> None: ...

    # the worker, in its own process (the arbiter is the forked copy of the master's)
    def post_fork(self, arbiter: Arbiter, worker: Worker) -> None: ...
    def post_worker_init(self, worker: Worker) -> None: ...
    def worker_int(self, worker: Worker) -> None: ...
    def worker_abort(self, worker: Worker) -> None: ...
    def worker_exit(self, arbiter: Arbiter, worker: Worker) -> None: ...

    def handles_abort(self, worker: Worker) -> bool:
        """True when SIGABRT must run Python code (worker_abort) before the worker dies."""
        return False

    def request_hooks(self, worker: Worker) -> RequestHooks | None:
        return None

    def ssl_context(self, config: ServerConfig,
                    factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """The SSLContext of the TLS listeners (appserver.tls); ``factory`` builds the default
        one from the settings.  Called in the master at start-up and once in each worker."""
        return factory()
