"""The byte pump shared by the blocking worker classes (sync, gthread; gevent and eventlet later).

Design notes
------------
One :class:`Connection` wraps one accepted socket and its :class:`RequestParser`.  ``handle()``
serves every request that is ready and then says what should happen to the connection:

* ``IDLE``: the response went out and the connection may be kept alive; nothing is buffered.
* ``PARTIAL``: part of the next request head arrived (only in ``nonblocking_head`` mode): the
  caller watches the socket again, with the head's deadline, instead of a thread blocking on a
  slow client (slowloris).
* ``CLOSED``: the connection is finished and closed.

Body reads and response writes that make no progress for ``io_timeout`` seconds end the
connection.  Two ways to get there:

* plain sockets of the epoll-driven classes (sync, gthread: ``nonblocking_head``) stay blocking,
  without a CPython timeout, and every call says ``MSG_DONTWAIT``: only when the kernel answers
  EAGAIN does the connection wait in ``poll``, up to ``io_timeout`` (then TimeoutError, as a
  socket with a timeout raises).  A socket with a timeout polls *before* every send and recv --
  one syscall per call for nothing when the bytes or the buffer space are already there, which
  was about 15% of the sync worker's busy time -- and ``settimeout`` itself costs an ioctl per
  connection.  ``sendfile`` has no such flag: the socket gets its timeout for that call only.
* the green classes (gevent, eventlet) do the same on the non-blocking kernel socket under the
  library's green one (``GreenIO``), and wait in the library's hub instead of ``poll``.  Their
  socket objects are Python code: a ``sendall`` there cost a ``getsockopt`` and timeout objects,
  and each wait for a request two ``settimeout`` calls (about 15% of a gevent worker's CPU per
  request with a direct client; within noise behind nginx, docs/design.md).  The green socket
  keeps ``io_timeout`` for the few calls that still go through it (``sendfile``, WebSocket
  frames).
* TLS sockets keep CPython's timeout, ``io_timeout``.

Errors in the client's bytes become the status the parser attached to them, sent with
``Connection: close``; an app that raises gets a 500 with the traceback in the error log; the
worker itself never dies of either.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..config import ServerConfig
from ..forwarded import AllowList
from ..http.events import END_OF_MESSAGE, NEED_DATA, Body, ProtocolError, RequestHead
from ..http.parser import RequestParser
from ..http.proxyheader import Mode as ProxyMode
from ..http.proxyheader import ProxyHeaderReader
from ..http.response import CONTINUE, ResponseError, error_response
from ..logs import AccessLog
from ..tls import is_tls, wrap
from ..websocket.blocking import Registry
from ..websocket.handshake import is_websocket_request
from ..wsgi import (
    FileWrapper,
    InputStream,
    Response,
    WSGIApp,
    WSGIContext,
    build_environ,
    closing,
    write_body,
)
from . import tlsio
from .linger import DRAIN_LIMIT, can_keep_alive
from .linger import linger as lingering_close

if TYPE_CHECKING:
    import ssl

    from ..metrics.recorder import Recorder

log = logging.getLogger("appserver.worker")

IDLE, PARTIAL, CLOSED = "idle", "partial", "closed"
# On a graceful stop, an idle keep-alive connection is closed once it has been idle this long.
# Its last response promised keep-alive, so its client may send another request at any moment;
# closing under that request fails it (a 502 for a POST behind nginx, which does not retry).  A
# connection busy enough to matter is used again sooner (nginx reuses its most recently used
# upstream connections first) and gets "Connection: close" instead.  The price: a stop or reload
# with idle connections takes this long.
IDLE_CLOSE_DURING_STOP = 2.0
RECV_SIZE = 65536


# The unpatched poll, bound when this module is imported -- always before a green worker
# monkey-patches the standard library (its module imports this one).  eventlet's green select
# registers the socket with its hub, and a connection's greenlet already waits to read it there:
# eventlet raised "Second simultaneous read" and the worker crashed in its graceful stop,
# resetting its connections (502s during reloads and upgrades).  poll, not select: select fails
# on descriptors above 1023, which a worker holding many connections has.
_poll = select.poll
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_DONTWAIT = socket.MSG_DONTWAIT
_PEEK = socket.MSG_PEEK


def has_data(sock: socket.socket) -> bool:
    """Bytes (or EOF) wait unread.  Not ``recv(MSG_PEEK | MSG_DONTWAIT)``: on a socket with a
    timeout CPython polls *before* the call, so that would wait for the whole timeout.  A TLS
    socket may hold decrypted bytes the kernel no longer sees (``pending()``)."""
    try:
        if is_tls(sock) and sock.pending():  # type: ignore[attr-defined]
            return True
        poller = _poll()
        poller.register(sock, _POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


class GreenIO(Protocol):
    """How a green worker class's library waits: the pump's ``nowait`` mode on its sockets."""

    def raw(self, sock: socket.socket) -> socket.socket | None:
        """The non-blocking kernel socket under the library's green ``sock``; None when there
        is none to be had (the green socket is then used, with its timeout)."""

    def wait(self, raw: socket.socket, event: int, timeout: float) -> None:
        """Yield to the hub until ``raw`` is ready for ``event`` (POLLIN or POLLOUT), or raise
        TimeoutError after ``timeout`` seconds."""


class ClientGone(Exception):
    """The client vanished or stalled; there is nobody left to answer."""


class ServingState:
    """What the connections of one worker share: the app, the settings and the counters."""

    def __init__(self, config: ServerConfig, app: WSGIApp, access_log: AccessLog,
                 wsgi_context: WSGIContext, beat: Callable[[], None], *, keep_alive: bool,
                 max_requests: int) -> None:
        self.config = config
        self.app = app
        self.access_log = access_log
        self.wsgi = wsgi_context
        self.beat = beat
        self.keep_alive = keep_alive and config.keep_alive > 0
        self.max_requests = max_requests  # 0: unlimited
        self.requests = 0
        self.stopping = False             # no new keep-alive: a graceful stop or recycle is on
        self.io_timeout = config.header_timeout
        self.header_timeout = config.header_timeout
        # Set by the worker classes that can hold a connection open (None: upgrades are refused).
        self.websockets: Registry | None = None
        self.long_lived: set[int] = set()  # threads serving a WebSocket, not a stuck request
        self.on_retire: Callable[[], None] | None = None  # --max-requests reached
        self.parser_limits = dict(
            max_request_line=config.max_request_line, max_fields=config.max_fields,
            max_field_size=config.max_field_size, max_body=config.limit_request_body)
        self.tls: ssl.SSLContext | None = None  # set by the worker when the listeners speak TLS
        self.proxy_protocol: ProxyMode = config.proxy_protocol
        self.proxy_allow = AllowList(config.proxy_allow_ips)
        self.metrics: Recorder | None = None  # set by the worker when metrics are recorded

    def proxy_header_reader(self, peer: tuple[str, int] | None,
                            is_unix: bool) -> ProxyHeaderReader | None:
        """For a new connection: the reader of its optional PROXY header, or None when
        proxy_protocol is off."""
        if self.proxy_protocol == "off":
            return None
        allowed = self.proxy_allow.allows(peer[0] if peer else "", is_unix)
        return ProxyHeaderReader(self.proxy_protocol, allowed=allowed)

    def count_request(self, head: RequestHead | None = None) -> bool:
        """Count one request (its metrics: in flight, and ``head`` as the current request, until
        its access-log call); False once this worker should retire after it."""
        self.requests += 1
        metrics = self.metrics
        if metrics is not None:
            if head is None:
                metrics.begin(None, None)
            else:
                metrics.begin(head.method, head.target)
        if self.max_requests and self.requests >= self.max_requests and not self.stopping:
            self.stopping = True
            if self.on_retire is not None:
                self.on_retire()  # stop accepting now, not at the worker loop's next turn
        return not self.stopping


class Connection:
    """One client connection served by blocking calls (see the module notes)."""

    def __init__(self, sock: socket.socket, peer: Any, local: Any, is_unix: bool,
                 state: ServingState, *, nonblocking_head: bool = False,
                 green: GreenIO | None = None) -> None:
        self.sock = sock
        self.peer: tuple[str, int] | None = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.local: tuple[str, int] | None = (local[0], local[1]) if isinstance(local, tuple) else None
        self.is_unix = is_unix
        self.state = state
        self.nonblocking_head = nonblocking_head
        self.parser = RequestParser(**state.parser_limits)
        self.head_deadline = time.monotonic() + state.header_timeout
        self.idle_since = time.monotonic()
        self.closed = False
        self.waiting_idle = False  # blocked waiting for the next request (green workers)
        self.served = 0
        self._continue_pending = False
        self._body_done = True
        self._body_read = 0
        self._proxy = state.proxy_header_reader(self.peer, is_unix)
        self.tls = state.tls is not None
        self._handshake_due = self.tls  # wrapped and shaken on the first handle()
        # Every call with MSG_DONTWAIT on a blocking socket, or on the kernel socket under a
        # green one (see the module notes); ``io`` is the socket those calls go to.
        self._green = green
        raw = green.raw(sock) if green is not None and not self.tls else None
        self.io = raw if raw is not None else sock
        self.nowait = (nonblocking_head or raw is not None) and not self.tls
        if not self.nowait or raw is not None:
            sock.settimeout(state.io_timeout)
        elif sock.gettimeout() is not None:  # the app set socket.setdefaulttimeout()
            sock.settimeout(None)

    # ---- the request loop -------------------------------------------------------------------

    def handle(self) -> str:
        try:
            if self._handshake_due:
                waiting = self._handshake()
                if waiting is not None:
                    return waiting
            while True:
                event = self._next_head()
                if event is None:
                    return self._close()
                if event is PARTIAL or event is IDLE:
                    return event
                assert isinstance(event, RequestHead)
                self.served += 1
                if not self._serve(event):
                    return self._close(linger=self._client_may_send())
                self.head_deadline = time.monotonic() + self.state.header_timeout
                self.idle_since = time.monotonic()
                if self.nonblocking_head and not self.parser.has_pending_event() \
                        and not (self.tls and self.sock.pending()):  # type: ignore[attr-defined]
                    # (Decrypted bytes held by TLS would never wake the caller's epoll.)
                    return IDLE  # the caller watches the socket; blocking mode reads on here
        except ProtocolError as exc:
            log.info("bad request from %s: %s", self._peer_text(), exc)
            self.send_quietly(error_response(exc.status, exc.detail))
            return self._close(linger=True)
        except (ClientGone, OSError) as gone:  # (one name per type: mypyc, see test_build)
            log.debug("connection from %s ended: %r", self._peer_text(), gone)
            return self._close()

    def _next_head(self) -> RequestHead | str | None:
        """The next request head; None at a clean end of the connection; in ``nonblocking_head``
        mode IDLE (nothing of a next request yet) or PARTIAL (part of a head) to wait for more."""
        parser = self.parser
        while True:
            event = parser.next_event()
            if event is not NEED_DATA:
                if isinstance(event, RequestHead):
                    return event
                raise ProtocolError(400, f"unexpected {event!r}")  # pragma: no cover - defensive
            if parser.upgraded:
                parser.decline_upgrade()  # WebSocket arrives with its own issue; plain HTTP here
                continue
            if not parser.in_message and self.served:
                # A new request starts now: its head gets the full header timeout.
                self.head_deadline = time.monotonic() + self.state.header_timeout
            if self.nonblocking_head:
                try:
                    # Never waits: MSG_DONTWAIT on a plain socket (which has no timeout, so
                    # CPython does not poll first); TLS reads what it can decrypt now.
                    data = (tlsio.recv_nowait(self.sock, RECV_SIZE,  # type: ignore[arg-type]
                                              self.state.io_timeout) if self.tls
                            else self.sock.recv(RECV_SIZE, _DONTWAIT))
                except BlockingIOError:
                    return PARTIAL if parser.in_message or not self.served else IDLE
            else:
                # Between two requests (blocking mode: the green workers) wait up to --keep-alive
                # for the next one to begin; its head then gets --header-timeout.
                idle = not parser.in_message and self.served > 0
                deadline = time.monotonic() + self.state.config.keep_alive if idle else self.head_deadline
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if idle:
                        return None
                    raise ClientGone("request head not complete within the header timeout")
                self.waiting_idle = idle
                if not self.nowait:
                    self.sock.settimeout(remaining)
                try:
                    data = self._recv(remaining)
                except TimeoutError:
                    if idle:
                        return None  # the keep-alive time is over: a quiet close
                    raise ClientGone("request head not complete within the header timeout") from None
                finally:
                    self.waiting_idle = False
                    if not self.nowait:
                        self.sock.settimeout(self.state.io_timeout)
                if idle:
                    self.head_deadline = time.monotonic() + self.state.header_timeout
            if not data:
                parser.feed_eof()
                return None
            if self._proxy is not None:
                data = self._after_proxy_header(data)
            parser.feed(data)

    # ---- TLS ----------------------------------------------------------------------------------

    def _handshake(self) -> str | None:
        """Wrap the socket and advance the TLS handshake (see :mod:`.tlsio`): None once done,
        PARTIAL while the client has more to send, CLOSED when it failed."""
        state = self.state
        assert state.tls is not None
        if not is_tls(self.sock):
            self.sock = wrap(state.tls, self.sock, state.config)
        try:
            if not tlsio.handshake(self.sock, nonblocking=self.nonblocking_head,  # type: ignore[arg-type]
                                   deadline=self.head_deadline, io_timeout=state.io_timeout):
                return PARTIAL
        except tlsio.HandshakeFailed as exc:
            log.log(exc.level, "TLS handshake with %s %s", self._peer_text(), exc)
            return self._close()
        self._handshake_due = False
        return None

    def _after_proxy_header(self, data: bytes) -> bytes:
        """What of ``data`` follows the connection's PROXY header (b"" while it is incomplete);
        once it is read, its source address is the peer (REMOTE_ADDR, forwarded-header trust)."""
        assert self._proxy is not None
        rest = self._proxy.feed(data)  # a ProtocolError (400, 403) is answered by handle()
        if rest is None:
            return b""
        if self._proxy.source is not None:
            self.peer = self._proxy.source
        self._proxy = None
        return rest

    def _serve(self, head: RequestHead) -> bool:
        """Run the app for one request; True when the connection may serve another."""
        state = self.state
        state.beat()
        if head.upgrade is not None and is_websocket_request(head):
            from .wspump import serve_websocket  # noqa: PLC0415 - only for upgrade requests

            state.count_request(head)
            return serve_websocket(self, head)
        # Count first: the sync worker never keeps alive, and must still count for --max-requests.
        more = state.count_request(head)
        keep_alive = head.keep_alive and state.keep_alive and more
        self._body_done = False
        self._body_read = 0
        self._continue_pending = head.expect_continue
        response = Response(self.send, head.method, head.version, keep_alive)
        if keep_alive and head.has_body:
            self._head = head
            response.before_head = self._veto_keep_alive_if_body_unread
        body = InputStream(self._pull_body)
        try:
            environ = build_environ(state.wsgi, head, body, peer=self.peer, local=self.local,
                                    is_unix=self.is_unix)
        except ProtocolError as refused:  # handle() answers; it ends here for the metrics
            if state.metrics is not None:
                state.metrics.done(head.method, str(refused.status), 0, 0, 0.0)
            raise
        started = time.monotonic()
        hooks = state.wsgi.hooks  # None unless a request hook or StatsD is set
        try:
            if hooks is not None:  # inside the try: a raising pre_request is a 500, as in gunicorn
                hooks.pre_request(head, environ)
            result = state.app(environ, response.start_response)
            try:
                self.write_result(response, result)
            finally:
                closing(result)
        except ProtocolError as exc:  # a bad request body, met while the app read it
            log.info("bad request body from %s: %s", self._peer_text(), exc)
            if not response.headers_sent:
                self.send_quietly(error_response(exc.status, exc.detail))
            response.keep_alive = False
            response.status = response.status or f"{exc.status} Bad Request"
        except (ClientGone, ConnectionError, TimeoutError) as gone:
            log.debug("client %s went away during %s: %r", self._peer_text(), head.target, gone)
            response.keep_alive = False
        except Exception as failure:
            self.app_failed(failure, head, response)
        duration = time.monotonic() - started
        state.access_log.log(environ, response.status, response.headers, response.bytes_sent,
                             duration)
        if hooks is not None:  # after the access log line, as in gunicorn; never raises
            hooks.post_request(head, environ, response, duration)
        if not response.keep_alive:
            return False
        return self._finish_request_body()

    def _veto_keep_alive_if_body_unread(self, response: Response) -> None:
        """The app answers before it has read the whole body.  Without a 100 Continue sent, the
        client may or may not send the body now; a rest too large to drain (see
        :func:`.linger.can_keep_alive`) will not be read: either way this connection cannot
        carry another request, and the response must say so."""
        if self._body_done:
            return
        if self._continue_pending or not can_keep_alive(self._head, self._body_read, False):
            response.keep_alive = False

    def app_failed(self, exc: Exception, head: RequestHead, response: Response) -> None:
        what = "invalid response from the app" if isinstance(exc, ResponseError) else "app error"
        log.error("%s handling %s %s", what, head.method,
                  head.target.decode("latin-1", "replace"), exc_info=exc)
        if not response.headers_sent:
            self.send_quietly(error_response(500))
            response.status = "500 Internal Server Error"
            response.headers = []
        response.keep_alive = False  # a half-sent response cannot be repaired: cut it off

    # ---- response writing -------------------------------------------------------------------

    def write_result(self, response: Response, result: Iterable[bytes]) -> None:
        if isinstance(result, FileWrapper) and self._sendfile(response, result):
            return
        write_body(response, result, self.send)

    def _sendfile(self, response: Response, wrapper: FileWrapper) -> bool:
        extent = wrapper.regular_file_extent()
        if extent is None:
            return False
        offset, size = extent
        head = response.head(size)
        if not response.body_allowed:
            self.send(head)
            return True
        count = size if response.content_length is None else min(size, response.content_length)
        self.send(head)
        untimed = self.nowait and self._green is None
        if untimed:
            # sendfile takes no MSG_DONTWAIT: the socket's timeout bounds it, for this call only.
            self.sock.settimeout(self.state.io_timeout)
        try:
            sent = self.sock.sendfile(wrapper.filelike, offset, count)
        except ValueError:  # a green socket (eventlet) is non-blocking underneath: copy instead
            sent = self._copy_file(wrapper, count)
        finally:
            if untimed:
                try:
                    self.sock.settimeout(None)
                except OSError:
                    pass
        response.bytes_sent += sent
        if sent < (response.content_length or 0):
            response.keep_alive = False
        return True

    def _copy_file(self, wrapper: FileWrapper, count: int) -> int:
        sent = 0
        while sent < count:
            data = wrapper.filelike.read(min(wrapper.blksize, count - sent))
            if not data:
                break
            self.send(data)
            sent += len(data)
        return sent

    def send(self, data: bytes) -> None:
        if not data:
            return
        if not self.nowait:
            self.sock.sendall(data)
            return
        sock = self.io
        try:
            sent = sock.send(data, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return  # the usual case: one syscall
        with memoryview(data) as view:
            while sent < len(view):
                self._wait(_POLLOUT)
                try:
                    sent += sock.send(view[sent:], _DONTWAIT)
                except BlockingIOError:
                    pass

    def send_quietly(self, data: bytes) -> None:
        try:
            self.send(data)
        except OSError:
            pass

    def _recv(self, timeout: float | None = None) -> bytes:
        """The next bytes from the client, waiting up to ``timeout`` (``io_timeout`` by default;
        TimeoutError).  Without ``nowait``, the socket's own timeout applies."""
        if not self.nowait:
            return self.sock.recv(RECV_SIZE)
        while True:
            try:
                return self.io.recv(RECV_SIZE, _DONTWAIT)
            except BlockingIOError:
                self._wait(_POLLIN, timeout)

    def _wait(self, event: int, timeout: float | None = None) -> None:
        """Wait for the socket to be ready for ``event`` (``nowait`` mode); TimeoutError, as a
        socket with a timeout raises, when ``timeout`` (``io_timeout``) passes first.  Readiness
        ends the wait on a closed or reset connection too: the next call raises or reads EOF."""
        seconds = self.state.io_timeout if timeout is None else timeout
        if self._green is not None:
            self._green.wait(self.io, event, seconds)
            return
        poller = _poll()
        poller.register(self.io, event)
        if not poller.poll(seconds * 1000):
            raise TimeoutError("timed out")

    # ---- request body -----------------------------------------------------------------------

    def _pull_body(self) -> bytes:
        """The next piece of request body for ``wsgi.input``; b"" at its end."""
        if self._body_done:
            return b""
        if self._continue_pending:
            self._continue_pending = False
            self.send(CONTINUE)
        parser = self.parser
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                try:
                    data = self._recv()
                except TimeoutError:
                    raise ClientGone("request body stalled") from None
                if not data:
                    parser.feed_eof()
                    raise ClientGone("connection closed in the middle of the request body")
                self.state.beat()
                parser.feed(data)
                continue
            if type(event) is Body:
                self._body_read += len(event.data)
                return event.data
            if event is END_OF_MESSAGE:
                self._body_done = True
                return b""
            raise ProtocolError(400, f"unexpected {event!r}")  # pragma: no cover - defensive

    def _finish_request_body(self) -> bool:
        """Read what the app left of the body, so the next request can be parsed; give up (close)
        when too much is left or the client was never told to send it (100-continue)."""
        if self._body_done:
            return True
        if self._continue_pending:
            return False
        budget = DRAIN_LIMIT
        while budget > 0:
            try:
                data = self._pull_body()
            except (ClientGone, OSError, ProtocolError):
                return False
            if not data:
                return True
            budget -= len(data)
        return False

    # ---- closing ----------------------------------------------------------------------------

    def _client_may_send(self) -> bool:
        """After the last response: may the client still be sending, or have sent, bytes we did
        not read?  The rest of a body the app did not read (it may not have arrived yet: a
        client writes the head and the body separately), a pipelined request, anything
        unparsed.  Closing under such bytes needs a lingering close (see :mod:`.linger`)."""
        parser = self.parser
        try:
            # What the parser holds already: the end of a body-less request, say.
            while not self._body_done and parser.has_pending_event():
                if parser.next_event() is END_OF_MESSAGE:
                    self._body_done = True
        except ProtocolError:
            return True
        return (not self._body_done or parser.in_message or parser.has_pending_event()
                or self._bytes_waiting())

    def _bytes_waiting(self) -> bool:
        """Unread bytes wait in the socket.  In ``nowait`` mode a peek tells them from an EOF:
        a client that has read its response and closed (nginx after a ``Connection: close``
        response, every request of the sync worker) leaves nothing for a lingering close to
        protect, and it would cost a shutdown, an ioctl, a poll and a read for nothing."""
        if not self.nowait or self.sock.gettimeout() is not None:
            # (A WebSocket's closing handshake leaves a timeout: CPython would poll first.)
            return has_data(self.sock)
        try:
            return bool(self.sock.recv(1, _DONTWAIT | _PEEK))
        except OSError:  # BlockingIOError: nothing yet; a reset: nothing left to protect
            return False

    def _close(self, linger: bool = False) -> str:
        if self.closed:
            return CLOSED
        self.closed = True
        self.parser.release()
        try:
            if linger:
                lingering_close(self.sock, self.state.beat)
        finally:
            self.sock.close()
        return CLOSED

    def close(self) -> None:
        self._close()

    def _peer_text(self) -> str:
        if self.peer:
            return f"{self.peer[0]}:{self.peer[1]}"
        return "unix socket peer" if self.is_unix else "unknown peer"
