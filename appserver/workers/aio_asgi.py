"""One request of the asyncio worker's ASGI interface: the app's task in the loop.

Design notes
------------
* The connection (:class:`~.aio_protocol.HTTPProtocol`) is shared with the WSGI path: it parses,
  applies the limits and timeouts, counts requests, keeps or closes the connection and drains or
  lingers over an unread body.  It runs a request through a *cycle*: ``body.put``/``body.finish``
  feed it, ``start()`` starts it, and the cycle calls the connection's
  ``request_done(keep_alive, bytes still to write)`` in the loop when it is over.  The WSGI cycle
  (:class:`~.aio_request.RequestCycle`) runs in the pool; this one is a task in the loop, so every
  method here runs in the loop's thread and needs no lock.
* ``receive()``: body pieces queued by the loop go to the app as one ``http.request`` each time it
  asks; past ``HIGH_WATER`` unread bytes the connection stops reading the socket, and resumes once
  the app has taken them (back-pressure).  ``100 Continue`` goes out on the first ``receive()``.
  Once the body is delivered, ``receive()`` waits for the client to go away (``http.disconnect``),
  or returns that at once after the response is complete.  A body that stalls for
  ``--header-timeout`` counts as a disconnect, as a stalled ``wsgi.input`` read does.
* ``send()``: the head waits for the first body message, so that a single-message body gets a
  Content-Length and goes out in one write with its head; later pieces are framed (chunked when
  the app gave no length) and written at once; while the transport's buffer is over its
  high-water mark ``send()`` waits for it to drain (``--header-timeout`` without progress: the
  client is gone).  On a closed connection ``send()`` raises :class:`ClientDisconnected`, an
  ``OSError`` (spec 2.4), which Starlette turns into its ClientDisconnect.
* Extensions (docs/asgi.md, "Extensions"): ``http.response.pathsend`` (a path, opened off
  the loop) and ``http.response.zerocopysend`` (the app's open file, offset, count, more
  body) send a file with ``loop.sendfile`` (a copy under flow control where the loop or
  transport has none: uvloop, TLS), both through :mod:`.aio_sendfile`; ``trailers: True``
  holds the last chunk back for ``http.response.trailers`` when the client sent ``TE:
  trailers`` and the body is chunked, and drops the trailers otherwise.
* A client that goes away while the response is incomplete gives the app
  ``asgi_disconnect_grace_period`` seconds before its task is cancelled (:meth:`client_gone`);
  that cancellation ends the request as a disconnect, not as the worker's end.
* Errors: an exception (or an app returning without a complete response) before the head went
  out is a 500; after it, the connection is closed so that the client sees an incomplete
  response rather than a wrong one -- as on the WSGI path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..asgi import Message, check_body, scope_from_environ, start_response, trailer_lines
from ..http.events import ProtocolError, RequestHead
from ..http.response import CONTINUE, ResponseError, error_response
from ..wsgi import InputStream, Response, build_environ
from .aio_request import HIGH_WATER, ClientGone
from .aio_sendfile import current_position, open_regular, regular_size, send_file_body
from .disconnect import ClientDisconnected
from .linger import can_keep_alive

if TYPE_CHECKING:
    from .aio_protocol import HTTPProtocol

log = logging.getLogger("appserver.worker")

DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


def _no_body() -> bytes:
    return b""


class ASGIBody:
    """Request body pieces from the connection to the app's ``receive()`` (loop thread only)."""

    __slots__ = ("cycle", "pieces", "buffered", "taken", "done", "error", "gone",
                 "continue_pending")

    def __init__(self, cycle: ASGICycle, expect_continue: bool) -> None:
        # Cleared when the request is over (ASGICycle._release): no reference cycle is left,
        # so a request's objects are freed at once rather than by the garbage collector.
        self.cycle: ASGICycle | None = cycle
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.taken = 0
        self.done = False
        self.error: ProtocolError | None = None  # the body broke HTTP
        self.gone = False                          # the client went away
        self.continue_pending = expect_continue

    def put(self, data: bytes) -> bool:
        """Queue a piece; False when the connection should stop reading for now."""
        self.pieces.append(data)
        self.buffered += len(data)
        if self.cycle is not None:
            self.cycle.wake()
        return self.buffered < HIGH_WATER

    def finish(self, error: BaseException | None = None) -> None:
        cycle = self.cycle
        if isinstance(error, ProtocolError):
            self.error = error
        elif error is not None:
            self.gone = True
            if cycle is not None:
                cycle.client_gone()
        self.done = True
        if cycle is not None:
            cycle.wake()


class ASGICycle:
    def __init__(self, protocol: HTTPProtocol, head: RequestHead, keep_alive: bool) -> None:
        self.protocol = protocol
        self.head = head
        self.body = ASGIBody(self, head.expect_continue)
        self.response = Response(_unused_send, head.method, head.version, keep_alive)
        self.started = False
        self.complete = False          # the last body message was sent
        self.delivered = False         # the app has had the whole request body
        self.stalled = False
        self.trailers = False          # http.response.start said trailers: True
        self.body_done = False         # ... and the last body message went out
        self.trailer_lines: list[bytes] | None = None  # trailers to send (chunked, TE: trailers)
        self.task: asyncio.Task[None] | None = None
        self.grace_timer: asyncio.TimerHandle | None = None
        self.grace_cancelled = False   # cancelled by asgi_disconnect_grace_period
        self._event: asyncio.Event | None = None
        if keep_alive and head.has_body:
            self.response.before_head = self._veto_keep_alive

    # ---- the connection's side --------------------------------------------------------------

    def start(self) -> None:
        self.task = self.protocol.loop.create_task(self._run_and_report())

    def client_gone(self) -> None:
        """The client went away: the app has ``asgi_disconnect_grace_period`` seconds (it got
        http.disconnect, and send() raises) before its task is cancelled."""
        if self.grace_timer is not None or self.complete or self.task is None \
                or self.task.done():
            return  # a complete response's app (background tasks) is left to finish
        grace = self.protocol.worker.config.asgi_disconnect_grace_period
        self.grace_timer = self.protocol.loop.call_later(grace, self._cancel_for_disconnect)

    def _cancel_for_disconnect(self) -> None:
        if self.task is not None and not self.task.done() and not self.complete:
            log.debug("cancelling a request of %s: the client went away %ss ago",
                      self.protocol.peer_text(),
                      self.protocol.worker.config.asgi_disconnect_grace_period)
            self.grace_cancelled = True
            self.task.cancel()

    async def _run_and_report(self) -> None:
        """The request, then the connection's ``request_done`` in the same step (no extra
        turn of the loop through a done callback)."""
        try:
            keep_alive, out = await self.run()
        except Exception:  # run() catches what it expects
            log.exception("unexpected error in a request")
            keep_alive, out = False, b""
        except BaseException:  # cancelled: the worker is ending
            self._stop_grace_timer()
            self._release()
            self.protocol.request_done(False, b"")
            raise
        self._stop_grace_timer()
        self._release()
        self.protocol.request_done(keep_alive, out)

    def _release(self) -> None:
        """Break the request's reference cycles (body <-> cycle, the head's keep-alive veto):
        freed by reference counting, a request leaves nothing for the cyclic garbage collector,
        whose passes over a whole request's objects cost several per cent of a small
        request's CPU."""
        self.body.cycle = None
        self.response.before_head = None

    def _stop_grace_timer(self) -> None:
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()

    @property
    def disconnected(self) -> bool:
        return self.body.gone or self.protocol.closed

    def _veto_keep_alive(self, response: Response) -> None:
        """As the WSGI cycle's: keep-alive only when the rest of an unread body can be drained
        (:func:`.linger.can_keep_alive`) and the client was not left waiting for 100 Continue."""
        body = self.body
        if body.done and body.error is None and not body.gone:
            return
        if body.continue_pending or not can_keep_alive(self.head, body.taken + body.buffered,
                                                       False):
            response.keep_alive = False

    async def _wait(self, timeout: float | None) -> bool:
        """Until woken (a piece, the end, a disconnect, the response complete); False on
        timeout."""
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        event.clear()
        if timeout is None:
            await event.wait()
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ---- the app's side ---------------------------------------------------------------------

    async def receive(self) -> Message:
        body = self.body
        if self.complete or self.disconnected or self.stalled:
            return DISCONNECT
        if not self.delivered:
            if body.continue_pending:
                body.continue_pending = False
                if not body.done:
                    self._write(CONTINUE)
            timeout = self.protocol.worker.config.header_timeout
            while not body.pieces and not body.done:
                if not await self._wait(timeout):
                    self.stalled = True  # as a stalled wsgi.input read: the client is gone
                    self.response.keep_alive = False
                    return DISCONNECT
            if body.pieces:
                data = body.pieces.popleft() if len(body.pieces) == 1 else b"".join(body.pieces)
                body.pieces.clear()
                body.taken += len(data)
                body.buffered = 0
                self.protocol._resume_reading()
                more = not body.done or body.error is not None or body.gone
                if not more:
                    self.delivered = True
                return {"type": "http.request", "body": data, "more_body": more}
            if body.error is None and not body.gone:
                self.delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return DISCONNECT
        while not (self.complete or self.disconnected):
            await self._wait(None)
        return DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response was complete")
            if self.disconnected:
                raise ClientDisconnected("the client has closed the connection")
            if self.body_done:
                raise RuntimeError("http.response.body after the last body message")
            data, more = check_body(message)
            response = self.response
            if not more:
                if not response.headers_sent:
                    out = response.head(None if self._trailers_wanted() else len(data))
                else:
                    out = b""
                out += response.frame(data) + self._end_body()
                self._write(out)
                return
            out = response.frame(data) if response.headers_sent else \
                response.head() + response.frame(data)
            if out:
                self._write(out)
            protocol = self.protocol
            if protocol.writing_paused:
                try:
                    await asyncio.wait_for(protocol.drain(),
                                           protocol.worker.config.header_timeout)
                except TimeoutError:
                    raise ClientDisconnected("the client stopped reading") from None
                if self.disconnected:
                    raise ClientDisconnected("the client has closed the connection")
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            if self.disconnected:
                raise ClientDisconnected("the client has closed the connection")
            start_response(self.response, message)
            self.trailers = bool(message.get("trailers", False))
            self.started = True
        elif kind == "http.response.pathsend":
            await self._pathsend(message)
        elif kind == "http.response.zerocopysend":
            await self._zerocopysend(message)
        elif kind == "http.response.trailers":
            if not self.trailers:
                raise RuntimeError("http.response.trailers without trailers: True in "
                                   "http.response.start")
            if not self.body_done or self.complete:
                raise RuntimeError("http.response.trailers before the last body message"
                                   if not self.body_done else
                                   "http.response.trailers after the last trailers")
            lines = trailer_lines(message)  # checked even when they are dropped
            if self.trailer_lines is not None:
                self.trailer_lines.append(lines)
            if not message.get("more_trailers", False):
                if self.trailer_lines is not None:
                    self._write(b"0\r\n" + b"".join(self.trailer_lines) + b"\r\n")
                self.complete = True
                self.wake()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an HTTP request")

    def _trailers_wanted(self) -> bool:
        """Trailers can go out: the app announced them and the client accepts them (TE:
        trailers).  The body is then chunked (HTTP/1.1, no Content-Length from the app)."""
        if not self.trailers or self.head.version != "1.1" or self.head.method == "HEAD":
            return False
        for name, value in self.head.headers:
            if name.lower() == b"te" and b"trailers" in \
                    (token.strip() for token in value.lower().split(b",")):
                return True
        return False

    def _end_body(self) -> bytes:
        """The last body message went out: what ends the body on the wire.  With trailers to
        send, the last chunk waits for them; trailers the client did not ask for (or that a
        Content-Length leaves no room for) are dropped."""
        response = self.response
        if self.trailers:
            self.body_done = True
            if response.chunked and self._trailers_wanted():
                self.trailer_lines = []
                return b""
            self.trailer_lines = None
            return response.finish()
        self.complete = True
        self.wake()
        return response.finish()

    async def _pathsend(self, message: Message) -> None:
        """``http.response.pathsend``: the whole body is the file at ``path``, opened and
        stat-ed in the loop's default executor, then sent by :mod:`.aio_sendfile`
        (``loop.sendfile``, or a copy with flow control on uvloop and TLS)."""
        if not self.started:
            raise RuntimeError("http.response.pathsend before http.response.start")
        if self.response.headers_sent or self.body_done or self.complete:
            raise RuntimeError("http.response.pathsend after the response body began")
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ResponseError(f"http.response.pathsend: path must be an absolute path, "
                                f"got {path!r}")
        if self.disconnected:
            raise ClientDisconnected("the client has closed the connection")
        handle, size = await open_regular(path, "http.response.pathsend")
        with handle:
            response = self.response
            self._write(response.head(None if self._trailers_wanted() else size))
            await send_file_body(self, handle, 0, size)
        self._write(self._end_body())

    async def _zerocopysend(self, message: Message) -> None:
        """``http.response.zerocopysend``: ``count`` bytes (default: to the end) of the app's
        open ``file`` from ``offset`` (default: its position) as a body message: with
        ``more_body`` more messages (body or zerocopysend) follow, and the body is chunked
        unless the app gave a Content-Length; a lone last message gets its Content-Length,
        as a single ``http.response.body`` does.  The app closes the file."""
        kind = "http.response.zerocopysend"
        if not self.started:
            raise RuntimeError(f"{kind} before http.response.start")
        if self.complete or self.body_done:
            raise RuntimeError(f"{kind} after the last body message")
        file = message.get("file")
        fileno = getattr(file, "fileno", None)
        if fileno is None:
            raise ResponseError(f"{kind}: file must be an open file with fileno(), "
                                f"got {type(file).__name__}")
        offset, count = message.get("offset"), message.get("count")
        for name, value in (("offset", offset), ("count", count)):
            if value is not None and (type(value) is not int or value < 0):  # noqa: E721
                raise ResponseError(f"{kind}: {name} must be an int >= 0, got {value!r}")
        more = bool(message.get("more_body", False))
        if self.disconnected:
            raise ClientDisconnected("the client has closed the connection")
        fd = fileno()
        size = regular_size(fd, kind)
        if offset is None:
            offset = current_position(file, fd)
        available = max(size - offset, 0)
        count = available if count is None else min(count, available)
        response = self.response
        if not response.headers_sent:
            self._write(response.head(None if more or self._trailers_wanted() else count))
        await send_file_body(self, file, offset, count)
        if not more:
            self._write(self._end_body())
            return
        protocol = self.protocol
        if protocol.writing_paused:
            try:
                await asyncio.wait_for(protocol.drain(), protocol.worker.config.header_timeout)
            except TimeoutError:
                raise ClientDisconnected("the client stopped reading") from None

    def _write(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol.transport is not None and not protocol.closed:
            protocol.transport.write(data)

    # ---- the request ------------------------------------------------------------------------

    async def run(self) -> tuple[bool, bytes]:
        protocol = self.protocol
        state = protocol.worker.state
        head = self.head
        response = self.response
        worker = protocol.worker
        hooks = state.wsgi.hooks
        environ: dict[str, Any] = {}
        try:
            scope = worker.scopes.direct(head, protocol.peer, protocol.local,
                                         worker.lifespan_state, is_unix=protocol.is_unix)
            if scope is None or hooks is not None or state.access_log.enabled:
                environ = build_environ(state.wsgi, head, InputStream(_no_body),
                                        peer=protocol.peer, local=protocol.local,
                                        is_unix=protocol.is_unix)
        except ProtocolError as bad:  # contradictory scheme headers, a refused header name
            # (One name per exception type in a function: mypyc gives each name one type.)
            log.info("bad request from %s: %s", protocol.peer_text(), bad)
            if state.metrics is not None:  # it ends here (no access-log call)
                state.metrics.done(head.method, str(bad.status), 0, 0, 0.0)
            return False, error_response(bad.status, bad.detail)
        if scope is None:
            scope = scope_from_environ(environ, head, state.wsgi.header_map, protocol.local,
                                       worker.lifespan_state)
        out = b""
        started = time.monotonic()
        try:
            if hooks is not None:
                hooks.pre_request(head, environ)
            try:
                await worker.app(scope, self.receive, self.send)
            except asyncio.CancelledError:
                if not self.grace_cancelled:
                    raise  # the worker is ending
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                raise ClientDisconnected("cancelled after asgi_disconnect_grace_period") from None
            if not self.complete and not self.disconnected:
                raise ResponseError("the app returned without completing its response"
                                    if self.started else
                                    "the app returned without sending a response")
        except (ClientDisconnected, ClientGone, ConnectionError) as gone:
            log.debug("client %s went away: %r", protocol.peer_text(), gone)
            response.keep_alive = False
        except Exception as exc:
            if self.body.error is not None and not response.headers_sent:
                # It read a body that broke HTTP (it got http.disconnect): the 4xx below.
                log.debug("app error after a bad request body", exc_info=exc)
                raise_500 = False
            else:
                raise_500 = True
            what = "invalid response from the app" if isinstance(exc, ResponseError) else "app error"
            if raise_500:
                log.error("%s handling %s %s", what, head.method,
                          head.target.decode("latin-1", "replace"), exc_info=exc)
            if raise_500 and not response.headers_sent:
                out = error_response(500)
                response.status = "500 Internal Server Error"
                response.headers = []
            response.keep_alive = False
        error = self.body.error
        if error is not None and not response.headers_sent and not out:
            log.info("bad request body from %s: %s", protocol.peer_text(), error)
            out = error_response(error.status, error.detail)
            response.status = f"{error.status} Bad Request"
        if self.disconnected or self.stalled or error is not None:
            response.keep_alive = False
        duration = time.monotonic() - started
        if environ:
            state.access_log.log(environ, response.status, response.headers,
                                 response.bytes_sent, duration)
        elif state.metrics is not None:  # nothing logs: the metrics' end of the request
            state.metrics.done(head.method, response.status, head.content_length or 0,
                               response.bytes_sent, duration)
        if hooks is not None:
            hooks.post_request(head, environ, response, duration)
        return response.keep_alive, out


def _unused_send(data: bytes) -> None:  # pragma: no cover - the cycle writes itself
    raise AssertionError("ASGI responses are written by the cycle")
