"""The asyncio worker's connection: parse in the loop, run each request in the pool.

Design notes
------------
Every method here runs in the event loop's thread, except the ``*_threadsafe`` ones, which the
pool threads call.  A connection is in one of these states: waiting for a request head (timer:
``--header-timeout`` for the first request or a partial head, ``--keep-alive`` between requests);
running a request (``cycle`` set; body pieces flow to it); a WebSocket (``ws`` set; the session is
fed from ``data_received``); handed over to a library (``hijacked``: the loop reads nothing);
lingering (``lingering``: answered and half-closed, discarding what the client still sends until
it closes, see :mod:`.linger`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..asgi import scope_from_environ
from ..http.events import END_OF_MESSAGE, NEED_DATA, Body, ProtocolError, RequestHead
from ..http.parser import RequestParser
from ..http.proxyheader import ProxyHeaderReader
from ..http.response import error_response
from ..sockets import Listener
from ..websocket.blocking import HandedOverSocket
from ..websocket.bridge import LoopWebSocket
from ..websocket.handshake import HandshakeError, check_upgrade, is_websocket_request
from ..wsgi import ALREADY_HANDLED, InputStream, Response, build_environ, closing, write_body
from .aio_asgi import ASGICycle
from .aio_asgi_ws import ASGIWebSocket, websocket_scope
from .aio_request import ClientGone, RequestCycle
from .linger import LINGER_IDLE, LINGER_TIME
from .wspump import already_handled

if TYPE_CHECKING:
    from .aio import AsyncioWorker

log = logging.getLogger("appserver.worker")


# Bytes of a response an app thread may queue for the loop ahead of the transport.
QUEUE_LIMIT = 512 * 1024


class HTTPProtocol(asyncio.Protocol):
    # Per-connection state that most connections never change lives here as class defaults
    # (an instance attribute appears on the first assignment): a new connection -- nginx's
    # upstream keep-alive cache churns them -- then costs only what it uses.
    proxy: ProxyHeaderReader | None = None  # an optional PROXY header still to read
    body_failed = False  # the running request's body broke HTTP (see request_done)
    ws: LoopWebSocket | None = None
    asgi_ws: ASGIWebSocket | None = None  # an ASGI WebSocket request (before and after accept)
    upgrading = False
    hijacked = False
    closed = False
    served = 0
    # Write flow control: ``writing_paused`` for the loop's own writers (ASGI sends, drain);
    # ``can_write``, the same fact as a threading.Event for app threads (the WSGI path and
    # WebSockets), is made only when one may wait on it (see the property).
    writing_paused = False
    _can_write: threading.Event | None = None
    _drain_waiters: list[asyncio.Future[None]] | None = None  # ASGI sends waiting to write
    queued = 0               # bytes handed to the loop, not yet to the transport (pool side)
    flow_waiting = False     # an app thread waits for ``queued`` to fall (pool side)
    reading_paused = False
    _timer: asyncio.TimerHandle | None = None
    _head_started = False
    lingering = False
    _linger_until = 0.0

    def __init__(self, worker: AsyncioWorker, listener: Listener) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.is_unix = listener.is_unix
        self.local = listener.local if isinstance(listener.local, tuple) else None
        self.parser = RequestParser(**worker.state.parser_limits)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        # The running request: a WSGI call in the pool or an ASGI task in the loop.
        self.cycle: RequestCycle | ASGICycle | None = None
        self.body_complete = True
        self.idle_since = time.monotonic()
        if worker.cycle_class is RequestCycle:
            # App threads wait on it from the first request on: made here, in the loop's
            # thread, never lazily from a pool thread.
            self._can_write = threading.Event()
            self._can_write.set()

    @property
    def can_write(self) -> threading.Event:
        """Set while the transport accepts writes (cleared over its high-water mark), for
        threads that wait; first called in the loop's thread (a WSGI connection has it from
        the start; an ASGI WebSocket asks for it when it opens)."""
        event = self._can_write
        if event is None:
            event = self._can_write = threading.Event()
            if not self.writing_paused:
                event.set()
        return event

    # ---- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is not a subclass)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.proxy = self.worker.state.proxy_header_reader(self.peer, self.is_unix)
        self.worker.connections.add(self)
        self._arm(self.worker.config.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.feed(data)
            return
        if self.lingering:
            self._arm_linger()
            return
        if self.hijacked or self.closed:
            return
        if self.proxy is not None:
            try:
                rest = self.proxy.feed(data)
            except ProtocolError as exc:
                self._reject(exc)
                return
            if rest is None:
                return
            if self.proxy.source is not None:
                self.peer = self.proxy.source
            self.proxy = None
            data = rest
        try:
            self.parser.feed(data)
        except ProtocolError as exc:
            if self.cycle is None and self.body_complete:
                self._reject(exc)
                return
            # A request is running: an error in its body goes to the app through the body
            # (_feed_body); one in a later request is answered after this response, when
            # next_event() raises it again (request_done).  Writing the error now would put a
            # second response on the wire, or one ahead of the answer to an earlier request.
            # (The same for a body being drained after its response: _drain_body closes.)
        if self.cycle is not None:
            self._feed_body()
        elif not self.body_complete:
            self._drain_body()
        elif not self.upgrading:
            self._next_request()

    def eof_received(self) -> bool | None:
        if self.cycle is not None:
            self.cycle.body.finish(ClientGone("the client closed its side"))
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser.release()
        self.writing_paused = False
        if self._can_write is not None:
            self._can_write.set()  # wake a writer: it will find the connection gone
        self._wake_drainers()
        if self.flow_waiting:
            with self.worker.flow:
                self.worker.flow.notify_all()
        self.worker.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.cycle is not None:
            self.cycle.body.finish(ClientGone("connection lost"))
        if self.ws is not None:
            self.ws.feed(None)
        elif self.asgi_ws is not None:
            self.asgi_ws.connection_gone()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self._can_write is not None:
            self._can_write.clear()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._can_write is not None:
            self._can_write.set()
        self._wake_drainers()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """In the loop (ASGI sends): until the transport's buffer is below its high-water mark
        or the connection is gone."""
        if not self.writing_paused or self.closed:
            return
        waiter = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        await waiter

    # ---- requests -----------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self.cycle is None and self.ws is None and not self.upgrading and not self.hijacked \
            and not self.parser.in_message

    def _next_request(self) -> None:
        state = self.worker.state
        try:
            event = self.parser.next_event()
        except ProtocolError as exc:
            self._reject(exc)
            return
        if event is NEED_DATA:
            if self.parser.upgraded:
                self.parser.decline_upgrade()
                self._next_request()
            elif self.parser.in_message and not self._head_started:
                self._head_started = True
                self._arm(self.worker.config.header_timeout)
            return
        assert isinstance(event, RequestHead)
        self._cancel_timer()
        self._head_started = False
        if event.upgrade is not None and is_websocket_request(event):
            self._start_websocket(event)
            return
        more = state.count_request(event)
        keep_alive = event.keep_alive and state.keep_alive and more
        self.cycle = self.worker.cycle_class(self, event, keep_alive)
        self.body_complete = False
        self.body_failed = False
        self._feed_body()
        self.cycle.start()  # calls request_done (in the loop) when the request is over

    def _feed_body(self) -> None:
        cycle = self.cycle
        assert cycle is not None
        while not self.body_complete:
            try:
                event = self.parser.next_event()
            except ProtocolError as exc:
                cycle.body.finish(exc)
                self.body_complete = True
                self.body_failed = True
                return
            if event is NEED_DATA:
                return
            if type(event) is Body:
                if not cycle.body.put(event.data):
                    self._pause_reading()
            elif event is END_OF_MESSAGE:
                cycle.body.finish()
                self.body_complete = True

    def request_done(self, keep_alive: bool, out: bytes) -> None:
        """The running request is over: write what is left (``out``), then keep the
        connection for the next request or close it."""
        self.cycle = None
        self.served += 1
        self.idle_since = time.monotonic()
        transport = self.transport
        if transport is None or self.closed:
            return
        if out:
            transport.write(out)
        if self.body_failed:
            # The body broke HTTP after this request was answered (an app that does not read
            # its body): nothing to parse after it, and nothing more to say -- a 400 now would
            # be a second response to one request.
            keep_alive = False
        if not keep_alive:
            self._close_after_response()
            return
        # Even when stopping: this response promised keep-alive, so the client may be sending
        # its next request already; that one is answered with Connection: close, and the
        # graceful stop closes the connection only once it has been idle for a while.
        self._resume_reading()
        if not self.body_complete:
            # The app left part of its body unread, small enough for the head to promise
            # keep-alive (RequestCycle._veto_keep_alive): read and drop the rest first.
            self._arm(self.worker.config.header_timeout)
            self._drain_body()
            return
        self._arm(self.worker.config.keep_alive)
        self._next_request()

    def _drain_body(self) -> None:
        """Drop what is parsed of the rest of an answered request's body; once it has all
        come, go on to the next request (a stalled client meets the header timeout)."""
        while not self.body_complete:
            try:
                event = self.parser.next_event()
            except ProtocolError:
                self.body_failed = True
                self._close_after_response()
                return
            if event is NEED_DATA:
                return
            if event is END_OF_MESSAGE:
                self.body_complete = True
        self._arm(self.worker.config.keep_alive)
        self._next_request()

    def _reject(self, exc: ProtocolError) -> None:
        log.info("bad request from %s: %s", self.peer_text(), exc)
        if self.transport is not None and not self.closed:
            self.transport.write(error_response(exc.status, exc.detail))
            self._linger()

    def _close_after_response(self) -> None:
        """Close once the response is out: at once when the client has nothing more to send,
        else lingering (the rest of an unread body, a pipelined request)."""
        parser = self.parser
        if self.body_complete and not self.body_failed and not parser.in_message \
                and not parser.has_pending_event():
            self.close()
        else:
            self._linger()

    def _linger(self) -> None:
        """Half-close after the response and discard what the client still sends until it
        closes its side (eof_received closes the transport), LINGER_IDLE seconds of silence or
        LINGER_TIME in all (see :mod:`.linger`)."""
        transport = self.transport
        if transport is None or self.closed or self.lingering:
            return
        self.lingering = True
        self._linger_until = time.monotonic() + LINGER_TIME
        if self.cycle is not None:
            self.cycle.body.finish(ClientGone("the connection is closing"))
        if transport.can_write_eof():
            transport.write_eof()  # after what is buffered: the response ends with FIN
        self._resume_reading()
        self._arm_linger()

    def _arm_linger(self) -> None:
        self._cancel_timer()
        remaining = self._linger_until - time.monotonic()
        if remaining <= 0:
            self.close()
        else:
            self._timer = self.loop.call_later(min(LINGER_IDLE, remaining), self.close)

    # ---- WebSockets ---------------------------------------------------------------------------

    def _start_websocket(self, head: RequestHead) -> None:
        state = self.worker.state
        registry = state.websockets
        assert registry is not None and self.transport is not None
        if state.stopping:
            self.transport.write(error_response(503, "this worker is restarting; try again"))
            self.transport.close()
            return
        try:
            key, offered = check_upgrade(head)
        except HandshakeError as refused:  # (one name per exception type: mypyc types it)
            self.transport.write(error_response(refused.status, refused.detail,
                                                extra_headers=refused.headers))
            self.transport.close()
            return
        if not registry.reserve():
            log.warning("WebSocket upgrade refused: %d WebSockets open in this worker "
                        "(--websocket-max-connections)", registry.limit)
            self.transport.write(error_response(503, "too many WebSockets open; try again later"))
            self.transport.close()
            return
        try:
            if self.worker.cycle_class is RequestCycle:
                self._hand_to_app(head, key, offered)
            else:
                self._hand_to_asgi(head, key, offered)
        except ProtocolError as exc:  # from the environ: contradictory scheme headers...
            registry.release(None)
            self.upgrading = False
            self._reject(exc)
        except Exception:
            # Whatever failed before the app got the request, the reserved place comes back.
            registry.release(None)
            self.upgrading = False
            log.exception("WebSocket upgrade for %s failed", head.target.decode("latin-1", "replace"))
            if not self.closed:
                self.transport.write(error_response(500))
                self.transport.close()

    def _hand_to_app(self, head: RequestHead, key: bytes, offered: list[str]) -> None:
        state = self.worker.state
        assert self.transport is not None
        # First: a request the environ refuses (a ProtocolError) changes nothing here.
        environ = build_environ(state.wsgi, head, InputStream(lambda: b""), peer=self.peer,
                                local=self.local, is_unix=self.is_unix)
        state.count_request()
        self.upgrading = True
        event = self.parser.next_event()
        assert event is END_OF_MESSAGE, event
        trailing, self.parser.trailing = self.parser.trailing, b""
        self._pause_reading()  # until the app chooses: native accept() resumes, a library reads itself
        ws = LoopWebSocket(self.loop, self.transport, key, offered,
                           max_message_size=state.config.websocket_max_message_size,
                           can_write=self.can_write,
                           on_open=lambda ws: self._ws_opened(ws, trailing))
        fd = self.transport.get_extra_info("socket").fileno()

        def duplicate() -> socket.socket:  # only if a library takes the connection over
            dup = socket.socket(fileno=os.dup(fd))
            dup.setblocking(True)
            return dup

        handed = HandedOverSocket(duplicate, trailing)
        environ["wsgi.websocket"] = ws
        if state.tls is None:
            # Over TLS the loop holds the TLS state: a duplicate descriptor would carry only
            # ciphertext, so libraries that take the socket over cannot be served here.
            environ["gunicorn.socket"] = handed
        future = self.worker.run_long_lived(lambda: self._run_ws_app(environ, ws, head, handed))
        future.add_done_callback(lambda f: self._ws_done(f, ws))

    def _hand_to_asgi(self, head: RequestHead, key: bytes, offered: list[str]) -> None:
        """The ASGI ``websocket`` scope: the app's task in the loop (:mod:`.aio_asgi_ws`)."""
        worker = self.worker
        state = worker.state
        # First: a request the environ refuses (a ProtocolError) changes nothing here.  The
        # environ decides the client, the scheme and the dropped header names, as for HTTP.
        environ = build_environ(state.wsgi, head, InputStream(lambda: b""), peer=self.peer,
                                local=self.local, is_unix=self.is_unix)
        scope = websocket_scope(scope_from_environ(environ, head, state.wsgi.header_map,
                                                   self.local, worker.lifespan_state), offered)
        state.count_request()
        self.upgrading = True
        event = self.parser.next_event()
        assert event is END_OF_MESSAGE, event
        trailing, self.parser.trailing = self.parser.trailing, b""
        self._pause_reading()  # until websocket.accept
        ws = ASGIWebSocket(self, head, key, offered, trailing,
                           max_message_size=state.config.websocket_max_message_size)
        self.asgi_ws = ws
        self.loop.create_task(self._run_asgi_ws(ws, scope, environ))

    async def _run_asgi_ws(self, ws: ASGIWebSocket, scope: dict[str, Any],
                           environ: dict[str, Any]) -> None:
        state = self.worker.state
        started = time.monotonic()
        try:
            await ws.run(self.worker.app, scope)
        finally:
            registry = state.websockets
            assert registry is not None
            registry.release(ws if ws.accepted else None)
            self.upgrading = False
            self.asgi_ws = None
        response = ws.response
        state.access_log.log(environ, response.status or "-", response.headers or [],
                             response.bytes_sent, time.monotonic() - started)
        if self.transport is None or self.closed:
            return
        if ws.out:
            self.transport.write(ws.out)
        if ws.accepted:
            ws.end_in_loop()  # a lingering close: the peer may still be sending
        else:
            self._linger()  # a denial or a 500: the client may still be sending

    def _ws_opened(self, ws: LoopWebSocket, trailing: bytes) -> None:
        self.ws = ws
        assert self.worker.state.websockets is not None
        self.worker.state.websockets.opened(ws)
        self._resume_reading()
        if trailing:
            ws.feed(trailing)

    def _run_ws_app(self, environ: dict[str, Any], ws: LoopWebSocket, head: RequestHead,
                    handed: HandedOverSocket) -> tuple[str, bytes]:
        """In a pool thread: the app's call; returns what happened and bytes to write."""
        state = self.worker.state
        out: list[bytes] = []
        response = Response(out.append, head.method, head.version, keep_alive=False)
        started = time.monotonic()
        status = "101 Switching Protocols"
        outcome = "websocket"
        try:
            result: Any
            try:
                result = state.app(environ, response.start_response)
            except StopIteration:
                result = ALREADY_HANDLED
            if ws.accepted:
                closing(result)
                ws.finish()
            elif already_handled(result):
                outcome = "hijacked"
            else:
                outcome = "http"
                try:
                    write_body(response, result, out.append)
                finally:
                    closing(result)
                status = response.status or "-"
        except Exception as exc:
            log.error("app error in WebSocket request %s", head.target.decode("latin-1", "replace"),
                      exc_info=exc)
            if ws.accepted:
                ws.close(1011, "internal error")
                ws.finish()
            elif not response.headers_sent:
                outcome, out = "http", [error_response(500)]
                status = "500 Internal Server Error"
        finally:
            if outcome != "hijacked":
                # Ours.  A library that took it over may still be using it after the app returned
                # (simple-websocket's reader answers the client's close): it closes it itself.
                handed.discard()
        state.access_log.log(environ, status, response.headers, response.bytes_sent,
                             time.monotonic() - started)
        return outcome, b"".join(out)

    def _ws_done(self, future: asyncio.Future[tuple[str, bytes]], ws: LoopWebSocket) -> None:
        registry = self.worker.state.websockets
        assert registry is not None
        registry.release(ws if ws.accepted else None)
        self.upgrading = False
        try:
            outcome, out = future.result()
        except Exception:
            log.exception("unexpected error in a WebSocket request")
            outcome, out = "http", b""
        if self.transport is None or self.closed:
            return
        if out:
            self.transport.write(out)
        if outcome == "hijacked":
            self.transport.abort()  # the library has closed the connection its own way
        elif outcome == "websocket" and ws.accepted:
            ws.end_in_loop()  # a lingering close: the peer may still be sending
        else:
            self.transport.close()

    # ---- flow control and timers ----------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def resume_reading_threadsafe(self) -> None:
        if self.reading_paused:
            self._post(self._resume_reading)

    def write_threadsafe(self, data: bytes) -> None:
        """Hand ``data`` to the loop (from an app thread).  Two waits bound what a response can
        hold in memory: the transport's own flow control (``can_write``, cleared while its buffer
        is over the high-water mark) and, because that only reacts once the loop has run the
        queued writes, a limit on the bytes queued for the loop but not yet written: an app
        streaming a large body faster than the loop drains it waits here (without it a 1 GiB
        download grew the worker by up to 50 MiB)."""
        timeout = self.worker.config.header_timeout
        if not self.can_write.wait(timeout) or self.closed:
            raise ClientGone("the client stopped reading")
        flow = self.worker.flow
        with flow:
            self.queued += len(data)
            over = self.queued > QUEUE_LIMIT
        self._post(self._write, data)
        if over:
            with flow:
                self.flow_waiting = True
                try:
                    drained = flow.wait_for(lambda: self.queued <= QUEUE_LIMIT or self.closed,
                                            timeout)
                finally:
                    self.flow_waiting = False
            if not drained or self.closed:
                raise ClientGone("the client stopped reading")

    def _post(self, func: Callable[..., None], *args: Any) -> None:
        """From an app thread: in the loop, in order with the request's completion
        (:meth:`.aio_pool.AppPool.post`)."""
        pool = self.worker.app_pool
        assert pool is not None  # (only app threads call this)
        pool.post(func, *args)

    def _write(self, data: bytes) -> None:
        flow = self.worker.flow
        with flow:
            self.queued -= len(data)
            if self.flow_waiting and self.queued <= QUEUE_LIMIT:
                flow.notify_all()
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.cycle is None and self.ws is None and not self.upgrading and not self.hijacked:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def peer_text(self) -> str:
        if self.peer:
            return f"{self.peer[0]}:{self.peer[1]}"
        return "unix socket peer" if self.is_unix else "unknown peer"
