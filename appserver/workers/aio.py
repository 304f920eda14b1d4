"""The ``asyncio`` worker: an event loop does all socket I/O; the WSGI app runs in a bounded pool.

Design notes
------------
* One :class:`HTTPProtocol` per connection parses with the same sans-I/O parser as every other
  class; an idle keep-alive connection or a WebSocket waiting for a message is just a protocol
  object in the loop -- no thread, no greenlet.  uvloop is used when installed (``--loop``).
* A request is handed to the pool (``--threads``; 64 when left at 1; :mod:`.aio_pool`) as a
  :class:`~appserver.workers.aio_request.RequestCycle`; the loop keeps feeding its body and, once
  the call returns, writes what is left and parses the next request (pipelining in order).
* WebSocket handlers of the native API run in a separate pool sized by
  ``--websocket-max-connections``, so long-lived sockets never starve ordinary requests.  A
  library that takes ``gunicorn.socket`` gets a blocking duplicate of the descriptor while the
  loop stops reading it.
* Heartbeat: a ticker task beats every quarter second; a loop blocked by the app would stop it,
  and the master's timeout kill is then right.  If every pool thread has been in one request for
  longer than ``--timeout``, the ticker stops beating too (see gthread).
* Graceful stop: the servers stop accepting, WebSocket clients get 1001/1012, idle connections
  close, requests in flight finish within ``--graceful-timeout``.
* ``--interface asgi`` (``-k asgi``): the same connections run each request as an ASGI task in
  the loop instead of a pool call (:mod:`.aio_asgi`); the lifespan startup runs before the
  worker counts as booted and the shutdown after the graceful stop (:mod:`.aio_lifespan`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..asgi import ScopeBuilder
from ..websocket import greenhub
from .aio_asgi import ASGICycle
from .aio_lifespan import Lifespan, LifespanFailed
from .aio_pool import AppPool
from .aio_protocol import HTTPProtocol
from .aio_request import RequestCycle
from .base import EXIT_APP_LOAD_ERROR, Worker, log
from .pump import IDLE_CLOSE_DURING_STOP

T = TypeVar("T")
DEFAULT_POOL = 64
WS_HUBS = 4


class AsyncioWorker(Worker):
    multithread = True
    holds_connections = True
    app_pool: AppPool | None = None  # the WSGI app's threads, made by serve()

    cycle_class: type[RequestCycle] | type[ASGICycle] = RequestCycle
    lifespan: Lifespan | None = None
    lifespan_state: dict[str, Any] | None = None
    _early_loop: asyncio.AbstractEventLoop | None = None

    def made_app(self, app: Any) -> Any:
        """ASGI: an async factory called in the app spec (``'main:create_app()'``, gunicorn's
        MODULE:factory() form) gave a coroutine; it is awaited here, once, in the loop that
        will serve (so what it makes belongs to that loop), beating the heartbeat meanwhile as
        the lifespan startup does.  Its result is then checked as any app is."""
        if self.config.interface != "asgi" or not inspect.iscoroutine(app):
            return app
        self._early_loop = self._new_loop()
        asyncio.set_event_loop(self._early_loop)
        try:
            made = self._early_loop.run_until_complete(self._await_app_factory(app))
        except BaseException:
            log.exception("worker %d: the ASGI app factory %s failed", self.pid,
                          self.config.wsgi_app)
            self.exit(EXIT_APP_LOAD_ERROR)
        log.debug("worker %d: the app factory %s made %r", self.pid, self.config.wsgi_app, made)
        return made

    async def _await_app_factory(self, factory: Coroutine[Any, Any, Any]) -> Any:
        task = asyncio.ensure_future(factory)
        while True:
            self.heartbeat.beat()
            done, _ = await asyncio.wait([task], timeout=0.25)
            if done:
                return task.result()

    def before_serving(self) -> None:
        """ASGI: the loop now, and the lifespan startup in it, before the worker is booted."""
        if self.config.interface != "asgi":
            return
        self.cycle_class = ASGICycle
        self.scopes = ScopeBuilder(self.state.wsgi)
        if self._early_loop is None:  # (made_app may have made it for a factory)
            self._early_loop = self._new_loop()
        asyncio.set_event_loop(self._early_loop)
        if self.config.asgi_lifespan == "off":
            return
        lifespan = Lifespan(self.app, self.config.asgi_lifespan, self.heartbeat.beat)
        try:
            self._early_loop.run_until_complete(lifespan.startup())
        except LifespanFailed as exc:
            log.error("worker %d: ASGI lifespan startup failed: %s", self.pid, exc)
            self.exit(EXIT_APP_LOAD_ERROR)
        if lifespan.supported:
            self.lifespan = lifespan
            self.lifespan_state = lifespan.state

    def serve(self) -> None:
        self.loop = self._early_loop or self._new_loop()
        asyncio.set_event_loop(self.loop)
        threads = self.config.threads if self.config.threads > 1 else DEFAULT_POOL
        self.app_pool = AppPool(self.loop, threads, "appserver-app")
        self.ws_executor = ThreadPoolExecutor(self.config.websocket_max_connections,
                                              thread_name_prefix="appserver-ws")
        # Native WebSocket handlers park as greenlets instead of holding a thread each.
        self.ws_hubs = greenhub.HubPool(WS_HUBS) if greenhub.available() else None
        self.connections: set[HTTPProtocol] = set()
        # Guards every connection's count of bytes handed to the loop but not yet written to its
        # transport (HTTPProtocol.write_threadsafe); app threads wait on it past the limit.
        self.flow = threading.Condition()
        try:
            self.loop.run_until_complete(self._main())
            self._cancel_leftovers()
        finally:
            self.app_pool.shutdown()
            self.ws_executor.shutdown(wait=False, cancel_futures=True)
            if self.ws_hubs is not None:
                self.ws_hubs.stop()
            self.loop.close()

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        choice = self.config.asyncio_loop
        if choice in ("auto", "uvloop"):
            try:
                import uvloop
            except ImportError:
                if choice == "uvloop":
                    raise
            else:
                loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
                return loop
        return asyncio.new_event_loop()

    async def _main(self) -> None:
        self._wake = asyncio.Event()
        self.state.on_retire = self._retire_now
        servers: list[Any] = []
        self._servers = servers
        for listener in self.listeners:
            listener.sock.setblocking(False)
            tls: dict[str, Any] = {} if self.state.tls is None else {
                "ssl": self.state.tls, "ssl_handshake_timeout": self.config.header_timeout}
            server = await self.loop.create_server(
                functools.partial(HTTPProtocol, self, listener),
                sock=listener.sock, backlog=self.config.backlog, **tls)
            servers.append(server)
        registry = self.state.websockets
        while self.alive:
            self.tick()
            if registry is not None:
                registry.tick(time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), 0.25)
            except TimeoutError:
                pass
        await self._graceful_stop(servers)

    def _cancel_leftovers(self) -> None:
        """ASGI tasks still running after the graceful timeout (their connections are aborted)."""
        tasks = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))

    def _retire_now(self) -> None:
        """In the loop (count_request runs there): stop accepting at once and start retiring."""
        for server in self._servers:
            server.close()
        self.retire_for_max_requests()
        self._wake.set()

    def tick(self) -> None:
        super().tick()
        pool = self.app_pool
        if pool is None:  # (the aiohttp class runs no WSGI pool)
            return
        started = list(pool.started.values())
        timeout = self.config.timeout
        if timeout and len(started) >= pool.size and time.monotonic() - max(started) > timeout:
            self.heartbeat.beat_at(max(started))  # every app thread is stuck: look silent

    def run_long_lived(self, func: Callable[[], T]) -> asyncio.Future[T]:
        """Run a native WebSocket handler: on a greenlet hub, else in the WebSocket pool (the
        app pool's requests go through :class:`.aio_pool.AppPool`)."""
        if self.ws_hubs is not None:
            return asyncio.wrap_future(self.ws_hubs.submit(func), loop=self.loop)
        return self.loop.run_in_executor(self.ws_executor, func)

    async def _graceful_stop(self, servers: list[Any]) -> None:
        self.state.stopping = True
        for server in servers:
            server.close()
        # Connections the loop accepted just before are set up by tasks still pending: let them
        # run, or they would be dropped (and reset) when the loop ends.
        for _ in range(5):
            await asyncio.sleep(0.01)
        self.close_websockets()
        deadline = time.monotonic() + self.config.graceful_timeout
        while self.connections and time.monotonic() < deadline:
            self.heartbeat.beat()
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.idle and now - conn.idle_since >= IDLE_CLOSE_DURING_STOP:
                    conn.close()
            await asyncio.sleep(0.05)
        if self.connections:
            log.warning("worker %d: %d connections still busy after the graceful timeout (%ds)",
                        self.pid, len(self.connections), self.config.graceful_timeout)
            for conn in list(self.connections):
                conn.abort()
        if self.lifespan is not None:
            await self.lifespan.shutdown(deadline - time.monotonic())
