"""An ASGI ``websocket`` scope on the asyncio worker (``-k asgi``): the app's task in the loop.

Design notes
------------
* Everything the WSGI classes do for a WebSocket is reused, not copied: the opening handshake is
  checked by :mod:`appserver.websocket.handshake` (in the connection, before the app sees
  anything) and answered with its ``accept_response``; frames, masking, control frames, the
  message size limit (close 1009) and the closing handshake are the sans-I/O session of
  :mod:`appserver.websocket.session`; pings, dead peers and the idle limit are
  :class:`~appserver.websocket.keepalive.KeepAlive`, driven by the worker's registry, which also
  sends close 1001/1012 on a graceful stop, reload or recycle and counts
  ``--websocket-max-connections``.  :class:`ASGIWebSocket` is the loop-side
  :class:`~appserver.websocket.bridge.LoopWebSocket` (feeding, lingering close) with the app's
  end made of coroutines: every method runs in the loop's thread, so writes go straight to the
  transport and a waiting ``receive()`` is woken by an :class:`asyncio.Event`.
* ``receive()`` (``asgi_receive``; ``receive``/``send`` are the WSGI API it inherits):
  ``websocket.connect`` first; after ``websocket.accept`` the messages the session
  assembled (``text`` or ``bytes``); once the session is over (either side closed, the
  connection failed or dropped) ``websocket.disconnect`` with the code and reason.  Past
  ``QUEUE_LIMIT`` unread messages the connection stops reading the socket until the app catches
  up.
* ``send()``: ``websocket.accept`` writes the 101 (subprotocol, extra headers);
  ``websocket.send`` frames and writes, then waits while the transport's buffer is over its
  high-water mark, at most ``--header-timeout`` without it draining (as an HTTP send): then
  the client is taken for gone, the connection is aborted, ``send()`` raises and
  ``receive()`` gives ``websocket.disconnect`` 1006; ``websocket.close`` starts the closing
  handshake -- before accept it is a 403 and no handshake;
  ``websocket.http.response.start``/``.body`` before accept is a denial response of the app's
  own, framed as an HTTP response.  After close (or on a dropped connection)
  ``send()`` raises :class:`~.disconnect.ClientDisconnected`, an ``OSError`` (spec 2.4).
* When the app returns: an accepted WebSocket not closed yet gets close 1000 (1011 after an
  exception), then a lingering close; an app that neither accepted nor denied gets a 500, as
  uvicorn does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..asgi import Message, check_body, start_response
from ..http.events import RequestHead
from ..http.response import ResponseError, error_response
from ..websocket.bridge import LoopWebSocket
from ..websocket.handshake import accept_response
from ..websocket.session import ABNORMAL, NORMAL
from ..wsgi import Response
from .disconnect import ClientDisconnected

if TYPE_CHECKING:
    from .aio_protocol import HTTPProtocol

log = logging.getLogger("appserver.worker")

QUEUE_LIMIT = 64     # unread messages before the connection stops reading the socket
INTERNAL_ERROR = 1011

# The app's view of the handshake.
CONNECTING, ACCEPTED, DENYING, DONE = "connecting", "accepted", "denying", "done"


class ASGIWebSocket(LoopWebSocket):
    def __init__(self, protocol: HTTPProtocol, head: RequestHead, key: bytes, offered: list[str],
                 trailing: bytes, *, max_message_size: int) -> None:
        assert protocol.transport is not None
        super().__init__(protocol.loop, protocol.transport, key, offered,
                         max_message_size=max_message_size, can_write=protocol.can_write,
                         on_open=lambda ws: protocol._ws_opened(ws, trailing))
        self.protocol = protocol
        self.stage = CONNECTING
        self.connect_sent = False
        self.response = Response(_unused_send, head.method, head.version, keep_alive=False)
        self.out = b""           # what is left to write when the app returns (a 500)
        self._waiter: asyncio.Future[None] | None = None  # a receive() waiting for news

    # ---- the loop side (overrides: everything runs in the loop) ----------------------------

    def _write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed(self, data: bytes | None) -> None:
        super().feed(data)
        if len(self.session.messages) >= QUEUE_LIMIT:
            self.protocol._pause_reading()

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """The registry's close (1001/1012, the idle limit): the app hears of it at once."""
        super().close(code, reason)
        self._wake()

    def connection_gone(self) -> None:
        """The connection dropped before the handshake completed."""
        self._wake()

    # ---- the app's side ---------------------------------------------------------------------

    @property
    def gone(self) -> bool:
        return self.protocol.closed or self.transport.is_closing() and not self.accepted

    async def asgi_receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        session = self.session
        while True:
            if self.accepted:
                if session.messages:
                    message = session.messages.popleft()
                    self.last_activity = time.monotonic()
                    if len(session.messages) < QUEUE_LIMIT // 2:
                        self.protocol._resume_reading()
                    if isinstance(message, str):
                        return {"type": "websocket.receive", "text": message}
                    return {"type": "websocket.receive", "bytes": message}
                if session.finished:
                    return {"type": "websocket.disconnect", "code": session.close_code,
                            "reason": session.close_reason}
            elif self.gone or self.stage != CONNECTING:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            if self._waiter is None:  # (shared, should two tasks wait)
                self._waiter = self.loop.create_future()
            await self._waiter

    async def asgi_send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("websocket.send before websocket.accept")
            data = _payload(message)
            if not self.session.open or self.protocol.closed:
                raise ClientDisconnected("the WebSocket is closed")
            self._write(self.session.send_message(data))
            self.last_activity = time.monotonic()
            protocol = self.protocol
            if protocol.writing_paused:
                await self._drain()
        elif kind == "websocket.accept":
            if self.stage != CONNECTING:
                raise RuntimeError(f"websocket.accept after the handshake was {self.stage}")
            if self.gone:
                raise ClientDisconnected("the client has closed the connection")
            subprotocol = message.get("subprotocol")
            headers = [(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                       for name, value in message.get("headers") or ()]
            if subprotocol is not None and subprotocol not in self.subprotocols:
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered: "
                                   f"{self.subprotocols}")
            head101 = accept_response(self._key, subprotocol, headers)  # checks the headers
            self.subprotocol = subprotocol
            self.accepted = True
            self.stage = ACCEPTED
            self.response.status = "101 Switching Protocols"
            self.response.headers = headers
            self._opened(head101)
        elif kind == "websocket.close":
            if self.stage == CONNECTING:  # a denial: 403, no handshake
                self.stage = DONE
                self.response.status = "403 Forbidden"
                self._write(error_response(403))
                return
            if self.stage != ACCEPTED:
                raise RuntimeError(f"websocket.close after the handshake was {self.stage}")
            if self.session.open:  # else closing already: the handshake is under way
                self.close(int(message.get("code") or NORMAL), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            if self.stage != CONNECTING:
                raise RuntimeError(f"{kind} after the handshake was {self.stage}")
            start_response(self.response, message)
            self.stage = DENYING
        elif kind == "websocket.http.response.body":
            if self.stage != DENYING:
                raise RuntimeError(f"{kind} without websocket.http.response.start")
            if self.protocol.closed:
                raise ClientDisconnected("the client has closed the connection")
            data, more = check_body(message)
            response = self.response
            out = b"" if response.headers_sent else response.head(None if more else len(data))
            out += response.frame(data)
            if not more:
                out += response.finish()
                self.stage = DONE
            self._write(out)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in a WebSocket")

    async def _drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark, as an HTTP send
        does: ``--header-timeout`` without it draining means the client stopped reading, and
        the connection is aborted (the app's ``receive()`` then gives close 1006) rather than
        left to the pings, whose unanswered ping (queued behind the full buffer) would end it
        only after up to two ping intervals."""
        protocol = self.protocol
        try:
            await asyncio.wait_for(protocol.drain(), protocol.worker.config.header_timeout)
        except TimeoutError:
            log.info("WebSocket client %s stopped reading for %ss: aborting the connection",
                     protocol.peer_text(), protocol.worker.config.header_timeout)
            if self.session.close_code is None:
                self.session.close_code = ABNORMAL
            self.transport.abort()
            self._wake()
            raise ClientDisconnected("the client stopped reading") from None
        if protocol.closed:
            raise ClientDisconnected("the client has closed the connection")

    async def run(self, app: Any, scope: dict[str, Any]) -> None:
        """The app's call, and what the server owes after it."""
        try:
            await app(scope, self.asgi_receive, self.asgi_send)
        except ClientDisconnected as exc:
            log.debug("WebSocket client %s went away: %r", self.protocol.peer_text(), exc)
        except Exception as exc:
            log.error("app error in WebSocket request %s", scope["path"], exc_info=exc)
            if self.accepted:
                if self.session.open:
                    self.close(INTERNAL_ERROR, "internal error")
            elif self.stage == CONNECTING:
                self.out = error_response(500)
                self.response.status = "500 Internal Server Error"
            self.stage = DONE
            return
        if self.accepted:
            if self.session.open:
                self.close(NORMAL)
        elif self.stage == CONNECTING:
            log.error("the app returned without accepting or denying the WebSocket %s",
                      scope["path"])
            self.out = error_response(500)
            self.response.status = "500 Internal Server Error"
        elif self.stage == DENYING:
            log.error("the app returned without completing its denial response for %s",
                      scope["path"])
        self.stage = DONE if not self.accepted else self.stage


def _payload(message: Message) -> str | bytes:
    text, data = message.get("text"), message.get("bytes")
    if (text is None) == (data is None):
        raise RuntimeError("websocket.send needs exactly one of 'text' and 'bytes'")
    if text is not None:
        if not isinstance(text, str):
            raise ResponseError(f"websocket.send: text must be str, got {type(text).__name__}")
        return text
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ResponseError(f"websocket.send: bytes must be bytes, got {type(data).__name__}")
    return bytes(data)


def _unused_send(data: bytes) -> None:  # pragma: no cover - the WebSocket writes itself
    raise AssertionError("denial responses are written by the WebSocket")


def websocket_scope(http_scope: dict[str, Any], offered: list[str]) -> dict[str, Any]:
    """The ``websocket`` scope from the ``http`` scope of the same upgrade request."""
    scope = http_scope
    scope["type"] = "websocket"
    del scope["method"]
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    scope["subprotocols"] = offered
    scope["extensions"] = {"websocket.http.response": {}}
    return scope
