"""One request of the asyncio worker: the WSGI call in a pool thread, bridged to the event loop.

Design notes
------------
* The loop parses; the pool thread runs the app.  Body pieces reach the thread through
  :class:`BodyChannel` (a condition variable); when more than ``HIGH_WATER`` bytes wait unread,
  the loop stops reading the socket, and the thread resumes it once it has caught up, so a 1 GiB
  upload never sits in memory.
* Response bytes are collected in the thread and handed to the loop in as few calls as possible:
  a list body (the common case) travels back with the result of the call, in the same wake-up
  that tells the loop the request is over; a streamed body goes out chunk by chunk, waiting while
  the transport's buffer is full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from ..http.events import ProtocolError, RequestHead
from ..http.response import CONTINUE, ResponseError, error_response
from ..wsgi import FileWrapper, InputStream, Response, build_environ, closing, write_body
from .linger import can_keep_alive

if TYPE_CHECKING:
    from .aio_protocol import HTTPProtocol

log = logging.getLogger("appserver.worker")

HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10


class ClientGone(Exception):
    pass


class BodyChannel:
    """Request body pieces from the loop thread to the app's thread."""

    def __init__(self, protocol: HTTPProtocol, expect_continue: bool) -> None:
        self.protocol = protocol
        self.cond = threading.Condition()
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.done = False
        self.error: BaseException | None = None
        self.continue_pending = expect_continue
        self.consumed_all = False
        self.taken = 0  # bytes the app has read

    # loop side
    def put(self, data: bytes) -> bool:
        """Queue a piece; False when the loop should stop reading for now."""
        with self.cond:
            self.pieces.append(data)
            self.buffered += len(data)
            self.cond.notify()
            return self.buffered < HIGH_WATER

    def finish(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.done = True
            self.error = error
            self.cond.notify()

    # app side
    def pull(self) -> bytes:
        protocol = self.protocol
        if self.continue_pending:
            self.continue_pending = False
            protocol.write_threadsafe(CONTINUE)
        with self.cond:
            deadline = time.monotonic() + protocol.worker.config.header_timeout
            while not self.pieces and not self.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientGone("request body stalled")
                self.cond.wait(remaining)
            if self.pieces:
                data = self.pieces.popleft()
                self.buffered -= len(data)
                self.taken += len(data)
                if self.buffered < LOW_WATER:
                    protocol.resume_reading_threadsafe()
                return data
            if self.error is not None:
                raise self.error
            self.consumed_all = True
            return b""


class NoBody:
    """The body channel of a request that has none (the common GET): nothing to hand over, so
    no condition variable and no deque per request; reading it gives b"" at once."""

    __slots__ = ()
    continue_pending = False
    consumed_all = True

    def put(self, data: bytes) -> bool:  # pragma: no cover - the parser gives no body pieces
        raise AssertionError("a body piece for a request without a body")

    def finish(self, error: BaseException | None = None) -> None:
        pass  # a client that leaves cannot take away a body that is not there

    def pull(self) -> bytes:
        return b""


NO_BODY = NoBody()


class RequestCycle:
    """Runs in a pool thread; returns (keep_alive, bytes still to write, status for the log)."""

    def __init__(self, protocol: HTTPProtocol, head: RequestHead, keep_alive: bool) -> None:
        self.protocol = protocol
        self.head = head
        self.body: BodyChannel | NoBody = BodyChannel(protocol, head.expect_continue) \
            if head.has_body else NO_BODY
        self.response = Response(self._send, head.method, head.version, keep_alive)
        self._out: list[bytes] = []
        self.streaming = False
        if keep_alive and head.has_body:
            self.response.before_head = self._veto_keep_alive

    def _veto_keep_alive(self, response: Response) -> None:
        """The app answers before it has read the whole body (see the pump's twin): keep-alive
        only when the body has arrived whole, or its rest is small enough for the loop to drain
        (:func:`.linger.can_keep_alive`) and the client was not left waiting for 100 Continue."""
        body = self.body
        assert isinstance(body, BodyChannel)  # (set only for a request with a body)
        with body.cond:
            complete = body.done and body.error is None
            if complete:
                return
            if body.continue_pending or not can_keep_alive(self.head, body.taken + body.buffered,
                                                           False):
                response.keep_alive = False

    def _send(self, data: bytes) -> None:
        if self.streaming:
            self.protocol.write_threadsafe(data)  # waits while the transport is paused
        else:
            self._out.append(data)

    def start(self) -> None:
        """Run the request in the app pool (the loop feeds its body meanwhile); the
        connection's ``request_done`` follows in the loop."""
        pool = self.protocol.worker.app_pool
        assert pool is not None  # (made before the first connection)
        pool.submit(self.run, self._done)

    def _done(self, result: tuple[bool, bytes] | None, error: BaseException | None) -> None:
        if result is None:  # run() catches what it expects
            log.error("unexpected error in a request", exc_info=error)
            keep_alive, out = False, b""
        else:
            keep_alive, out = result

        # Break the cycles through the response (its send and keep-alive veto are this
        # cycle's methods): the request's objects are then freed by reference counting, not
        # left to the cyclic garbage collector.  A write() the app kept fails from now on.
        self.response.send = _response_complete
        self.response.before_head = None
        self.protocol.request_done(keep_alive, out)

    def run(self) -> tuple[bool, bytes]:
        protocol = self.protocol
        worker = protocol.worker
        state = worker.state
        head = self.head
        response = self.response
        try:
            environ = build_environ(state.wsgi, head, InputStream(self.body.pull),
                                    peer=protocol.peer, local=protocol.local,
                                    is_unix=protocol.is_unix)
        except ProtocolError as exc:  # contradictory scheme headers, a refused header name
            log.info("bad request from %s: %s", protocol.peer_text(), exc)
            if state.metrics is not None:  # it ends here (no access-log call)
                state.metrics.done(head.method, str(exc.status), 0, 0, 0.0)
            return False, error_response(exc.status, exc.detail)
        started = time.monotonic()
        hooks = state.wsgi.hooks  # None unless a request hook or StatsD is set
        try:
            if hooks is not None:  # inside the try: a raising pre_request is a 500, as in gunicorn
                hooks.pre_request(head, environ)
            result = state.app(environ, response.start_response)
            try:
                if isinstance(result, FileWrapper):
                    extent = result.regular_file_extent()
                    if extent is not None:  # the length is known: no chunked framing
                        self._out.append(response.head(extent[1]))
                if type(result) not in (list, tuple):
                    self.streaming = True  # flush chunk by chunk (server-sent events, downloads)
                    if self._out:
                        protocol.write_threadsafe(b"".join(self._out))
                        self._out.clear()
                write_body(response, result, self._send)
            finally:
                closing(result)
        except ProtocolError as exc:
            log.info("bad request body from %s: %s", protocol.peer_text(), exc)
            if not response.headers_sent:
                self._out.append(error_response(exc.status, exc.detail))
                response.status = f"{exc.status} Bad Request"
            response.keep_alive = False
        except (ClientGone, ConnectionError) as exc:
            log.debug("client %s went away: %r", protocol.peer_text(), exc)
            response.keep_alive = False
        except Exception as exc:
            what = "invalid response from the app" if isinstance(exc, ResponseError) else "app error"
            log.error("%s handling %s %s", what, head.method,
                      head.target.decode("latin-1", "replace"), exc_info=exc)
            if not response.headers_sent:
                self._out = [error_response(500)]
                response.status = "500 Internal Server Error"
                response.headers = []
            response.keep_alive = False
        duration = time.monotonic() - started
        state.access_log.log(environ, response.status, response.headers, response.bytes_sent,
                             duration)
        if hooks is not None:  # after the access log line, as in gunicorn; never raises
            hooks.post_request(head, environ, response, duration)
        return response.keep_alive, b"".join(self._out)

    @property
    def body_unread(self) -> bool:
        return not self.body.consumed_all

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<RequestCycle {self.head!r}>"


def _response_complete(data: bytes) -> None:
    raise ResponseError("write() after the response was complete")
