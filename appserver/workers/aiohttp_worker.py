"""The ``aiohttp`` worker: an ``aiohttp.web.Application`` served by aiohttp's own server.

gunicorn's old ``gaiohttp`` class, and what ``aiohttp.GunicornWebWorker`` does, under this
server's process model.  Needs ``pip install 'appserver[aiohttp]'``.

Design notes
------------
* Ours: the process (fork, signals, heartbeat, USR1, timeout kill, recycling), the inherited
  listening sockets (TCP, unix, TLS through ``ssl_context``), the access log in our format, the
  trusted-proxy rule (:mod:`appserver.forwarded_aiohttp`) and the graceful stop.  aiohttp's: the
  HTTP parser, keep-alive, request bodies, WebSockets -- the app's own
  ``web.AppRunner`` + ``web.SockSite`` on each listener, with our limits as handler arguments.
* The loop is the asyncio worker's (uvloop with ``--loop auto`` when installed); a ticker in the
  loop beats every quarter second, so an app that blocks the loop is killed by ``--timeout``.
* ``runner.setup()`` (the app's on_startup) runs before the worker counts as booted: a failure
  stops the server with the app's message instead of a respawn loop (as the ASGI lifespan).
* Requests are counted in the access logger, which aiohttp calls once per response in the loop;
  reaching ``--max-requests`` wakes the main task, which stops the sites (no new connections;
  the master keeps the sockets, so clients queue in the backlog) and retires.
* Graceful stop: the sites stop accepting, open WebSockets get close 1001 (1012 on a reload or
  recycle), then ``runner.cleanup()``: idle connections close, the app's on_shutdown runs,
  requests in flight get ``--graceful-timeout`` (aiohttp's shutdown_timeout) before they are
  cancelled, then on_cleanup.  The heartbeat keeps beating meanwhile.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from ..asgi import app_kind_error
from ..forwarded import ForwardedTrust
from ..forwarded_aiohttp import REMOTE_KEY, forwarded_middleware
from ..heartbeat import STOP_RESTART
from ..websocket.blocking import GOING_AWAY, SERVICE_RESTART
from .aio import AsyncioWorker
from .base import EXIT_APP_LOAD_ERROR, log

# aiohttp needs a logger object to call the access logger at all; ours writes elsewhere.
_AIOHTTP_ACCESS = logging.getLogger("appserver.aiohttp.access")
WEBSOCKET_CLOSE_WAIT = 2.0  # seconds for WebSocket clients to answer our close


def _describe(app: Any) -> str:
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{getattr(app, '__module__', None) or type(app).__module__}.{name}"


def _body_bytes(response: web.StreamResponse, status: str,
                headers: list[tuple[str, str]]) -> int:
    """The body's length: Content-Length when the response has one, else what went out after
    the head (aiohttp's body_length counts the head too; chunk framing stays counted)."""
    if response.content_length is not None:
        return response.content_length
    head = len(f"HTTP/1.1 {status}\r\n") + sum(len(k) + len(v) + 4 for k, v in headers) + 2
    return max(0, response.body_length - head)


def _required_parameters(factory: Any) -> list[str]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class AiohttpWorker(AsyncioWorker):
    runner: web.AppRunner

    def kind_error(self, app: Any) -> str:
        return ""  # neither WSGI nor ASGI: unsupported_for says what this class takes

    def unsupported_for(self, app: Any) -> str:
        config = self.config
        if inspect.iscoroutinefunction(app):
            # aiohttp's GunicornWebWorker awaits ``myapp:make_app`` with no arguments.
            needed = _required_parameters(app)
            if needed:
                return (f"-k aiohttp awaits an async def app factory with no arguments; "
                        f"{_describe(app)} needs {', '.join(needed)}: if it is an ASGI app, "
                        f"serve it with -k asgi")
        elif not isinstance(app, web.Application) and not inspect.iscoroutine(app):
            kind = "an ASGI app" if app_kind_error(app, "wsgi") else "a WSGI app"
            return (f"-k aiohttp serves an aiohttp.web.Application only; {_describe(app)} looks "
                    f"like {kind}: serve it with -k asyncio or -k gthread (ASGI: -k asgi)")
        if config.proxy_protocol != "off":
            return ("--proxy-protocol does not apply to an aiohttp.web.Application (aiohttp's own "
                    "HTTP server reads its connections); take the PROXY header off in front")
        if config.root_path:
            return ("--root-path does not apply to an aiohttp.web.Application (it has no mount "
                    "point; add a prefix to its routes or use a sub-application)")
        return ""

    def before_serving(self) -> None:
        """The loop, the runner and the app's on_startup, before the worker is booted."""
        self._warn_inapplicable()
        self.loop = self._new_loop()
        asyncio.set_event_loop(self.loop)
        if not isinstance(self.app, web.Application):
            self.app = self._await_factory(self.app)
        self.runner = self._make_runner(self.app)
        try:
            self.loop.run_until_complete(self.runner.setup())
        except Exception:
            log.exception("worker %d: the aiohttp app's startup failed", self.pid)
            self.exit(EXIT_APP_LOAD_ERROR)

    def _await_factory(self, factory: Any) -> web.Application:
        """The Application an async def factory (or the coroutine of one called in the spec,
        ``myapp:make_app()``) returns, awaited in the worker's loop before the runner."""
        try:
            made = self.loop.run_until_complete(factory if inspect.iscoroutine(factory)
                                                else factory())
        except Exception:
            log.exception("worker %d: the aiohttp app factory failed", self.pid)
            self.exit(EXIT_APP_LOAD_ERROR)
        if not isinstance(made, web.Application):
            log.error("worker %d cannot serve %s: the app factory returned %s, not an "
                      "aiohttp.web.Application%s", self.pid, self.config.wsgi_app,
                      type(made).__qualname__,
                      " (return the runner's app; this worker makes its own runner)"
                      if isinstance(made, web.AppRunner) else "")
            self.exit(EXIT_APP_LOAD_ERROR)
        return made

    def _warn_inapplicable(self) -> None:
        config, defaults = self.config, type(self.config)()
        websocket = [name for name in ("websocket_ping_interval", "websocket_max_message_size",
                                       "websocket_idle_timeout", "websocket_max_connections")
                     if getattr(config, name) != getattr(defaults, name)]
        if websocket:
            log.warning("worker %d: %s do not apply to an aiohttp app (web.WebSocketResponse's "
                        "heartbeat= and max_msg_size= are the app's)", self.pid,
                        ", ".join(websocket))
        # aiohttp's own server reads the connections: these of ours have nothing to act on.
        server = [name for name in ("header_timeout", "worker_connections", "threads",
                                    "forwarder_headers", "header_map")
                  if getattr(config, name) != getattr(defaults, name)]
        if server:
            log.warning("worker %d: %s do not apply to an aiohttp app (aiohttp's server reads "
                        "the connections; see docs/workers.md)", self.pid, ", ".join(server))

    def _make_runner(self, app: web.Application) -> web.AppRunner:
        config = self.config
        trust = ForwardedTrust(config.forwarded_allow_ips, config.forwarded_hops,
                               config.secure_scheme_headers)
        app.middlewares.insert(0, forwarded_middleware(trust))
        self._websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        app.on_response_prepare.append(self._on_prepare)
        if config.limit_request_body:
            # Application(client_max_size=) has no setter; aiohttp's default is 1 MiB.
            app._client_max_size = config.limit_request_body
        limits: dict[str, Any] = {
            "keepalive_timeout": float(config.keep_alive), "max_line_size": config.max_request_line,
            "max_field_size": config.max_field_size, "max_headers": config.max_fields}
        accepted = inspect.signature(RequestHandler.__init__).parameters
        # An aiohttp without one of these would drop every handler argument (it retries
        # without them): pass only what it takes.
        kwargs = {key: value for key, value in limits.items() if key in accepted}
        return web.AppRunner(app, handle_signals=False, access_log_class=self._access_logger(),
                             access_log=_AIOHTTP_ACCESS, shutdown_timeout=config.graceful_timeout,
                             **kwargs)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            self._websockets.add(response)
        elif self.config.keep_alive == 0 or self.state.stopping:
            # aiohttp has prepared the head already but writes it after this signal.
            response.force_close()
            response.headers["Connection"] = "close"

    def _access_logger(self) -> type[AbstractAccessLogger]:
        record = self._record

        class AccessLogger(AbstractAccessLogger):
            def log(self, request: web.BaseRequest, response: web.StreamResponse,
                    time: float) -> None:
                record(request, response, time)

            @property
            def enabled(self) -> bool:
                return True  # every response is counted (--max-requests)

        return AccessLogger

    def _record(self, request: web.BaseRequest, response: web.StreamResponse,
                duration: float) -> None:
        self.state.count_request()
        access_log = self.state.access_log
        if not access_log.enabled and access_log.metrics is None:
            return  # (the metrics count in access_log.log: appserver.metrics.recorder)
        try:
            environ = {"HTTP_" + name.upper().replace("-", "_"): value
                       for name, value in request.headers.items()}
            version = request.version
            environ.update({
                "REMOTE_ADDR": request.get(REMOTE_KEY) or request.remote or "-",
                "REQUEST_METHOD": request.method, "RAW_URI": request.raw_path,
                "PATH_INFO": request.path, "QUERY_STRING": request.query_string,
                "SERVER_PROTOCOL": f"HTTP/{version.major}.{version.minor}",
                "CONTENT_LENGTH": request.headers.get("Content-Length", "")})
            status = f"{response.status} {response.reason}"
            headers = list(response.headers.items())
            access_log.log(environ, status, headers, _body_bytes(response, status, headers),
                           duration)
        except Exception:
            log.exception("worker %d: the access log line failed", self.pid)

    def serve(self) -> None:
        try:
            self.loop.run_until_complete(self._aiohttp_main())
            self._cancel_leftovers()
        finally:
            self.loop.close()

    def _retire(self) -> None:
        self.retire_for_max_requests()
        self._wake.set()

    async def _aiohttp_main(self) -> None:
        self._wake = asyncio.Event()
        self.state.on_retire = self._retire
        for listener in self.listeners:
            listener.sock.setblocking(False)
            site = web.SockSite(self.runner, listener.sock, ssl_context=self.state.tls,
                                backlog=self.config.backlog)
            await site.start()
        while self.alive:
            self.tick()
            try:
                await asyncio.wait_for(self._wake.wait(), 0.25)
            except TimeoutError:
                pass
        self.state.stopping = True
        beater = asyncio.ensure_future(self._beat())
        try:
            for running in list(self.runner.sites):
                await running.stop()
            await self._close_websockets()
            await self.runner.cleanup()
        finally:
            beater.cancel()

    async def _beat(self) -> None:
        while True:
            self.heartbeat.beat()
            await asyncio.sleep(0.25)

    async def _close_websockets(self) -> None:
        """Tell WebSocket clients why, as the other classes do (1001, or 1012 on a restart)."""
        sockets = [ws for ws in self._websockets if not ws.closed]
        if not sockets:
            return
        restart = bool(self.retire_reason) or self.heartbeat.stop_reason() == STOP_RESTART
        code, reason = (SERVICE_RESTART, b"service restart") if restart else \
            (GOING_AWAY, b"going away")
        started = time.monotonic()
        await asyncio.wait([asyncio.ensure_future(ws.close(code=code, message=reason))
                            for ws in sockets], timeout=WEBSOCKET_CLOSE_WAIT)
        log.info("worker %d: sent close %d to %d WebSockets (%.1fs)", self.pid, code,
                 len(sockets), time.monotonic() - started)
