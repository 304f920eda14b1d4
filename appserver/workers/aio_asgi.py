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
* Errors: an exception (or an app returning without a complete response) before the head went
  out is a 500; after it, the connection is closed so that the client sees an incomplete
  response rather than a wrong one -- as on the WSGI path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..asgi import Message, check_body, scope_from_environ, start_response
from ..http.events import ProtocolError, RequestHead
from ..http.response import CONTINUE, ResponseError, error_response
from ..wsgi import InputStream, Response, build_environ
from .aio_request import HIGH_WATER, ClientGone
from .linger import can_keep_alive

if TYPE_CHECKING:
    from .aio_protocol import HTTPProtocol

log = logging.getLogger("appserver.worker")

DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


class ClientDisconnected(OSError):
    """``send()`` on a connection the client has closed (ASGI HTTP spec 2.4)."""


def _no_body() -> bytes:
    return b""


class ASGIBody:
    """Request body pieces from the connection to the app's ``receive()`` (loop thread only)."""

    __slots__ = ("cycle", "pieces", "buffered", "taken", "done", "error", "gone",
                 "continue_pending")

    def __init__(self, cycle: ASGICycle, expect_continue: bool) -> None:
        self.cycle = cycle
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
        self.cycle.wake()
        return self.buffered < HIGH_WATER

    def finish(self, error: BaseException | None = None) -> None:
        if isinstance(error, ProtocolError):
            self.error = error
        elif error is not None:
            self.gone = True
        self.done = True
        self.cycle.wake()


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
        self._event: asyncio.Event | None = None
        if keep_alive and head.has_body:
            self.response.before_head = self._veto_keep_alive

    # ---- the connection's side --------------------------------------------------------------

    def start(self) -> None:
        self.protocol.loop.create_task(self._run_and_report())

    async def _run_and_report(self) -> None:
        """The request, then the connection's ``request_done`` in the same step (no extra
        turn of the loop through a done callback)."""
        try:
            keep_alive, out = await self.run()
        except Exception:  # run() catches what it expects
            log.exception("unexpected error in a request")
            keep_alive, out = False, b""
        except BaseException:  # cancelled: the worker is ending
            self.protocol.request_done(False, b"")
            raise
        self.protocol.request_done(keep_alive, out)

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
            data, more = check_body(message)
            response = self.response
            if not more:
                if response.headers_sent:
                    out = response.frame(data) + response.finish()
                else:
                    out = response.head(len(data)) + response.frame(data) + response.finish()
                self.complete = True
                self.wake()
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
            self.started = True
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an HTTP request")

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
        except ProtocolError as exc:  # contradictory scheme headers, a refused header name
            log.info("bad request from %s: %s", protocol.peer_text(), exc)
            return False, error_response(exc.status, exc.detail)
        if scope is None:
            scope = scope_from_environ(environ, head, state.wsgi.header_map, protocol.local,
                                       worker.lifespan_state)
        out = b""
        started = time.monotonic()
        try:
            if hooks is not None:
                hooks.pre_request(head, environ)
            await worker.app(scope, self.receive, self.send)
            if not self.complete and not self.disconnected:
                raise ResponseError("the app returned without completing its response"
                                    if self.started else
                                    "the app returned without sending a response")
        except (ClientDisconnected, ClientGone, ConnectionError) as exc:
            log.debug("client %s went away: %r", protocol.peer_text(), exc)
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
        if hooks is not None:
            hooks.post_request(head, environ, response, duration)
        return response.keep_alive, out


def _unused_send(data: bytes) -> None:  # pragma: no cover - the cycle writes itself
    raise AssertionError("ASGI responses are written by the cycle")
