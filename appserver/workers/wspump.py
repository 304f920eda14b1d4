"""Serving a WebSocket upgrade request on a blocking connection (thread-based workers).

Three ways an app can answer an upgrade request:

* the native API: it uses ``environ['wsgi.websocket']`` (receive/send/close); the server did the
  handshake, framing and pings, and completes the close handshake when the app returns;
* a library that takes the socket (simple-websocket, Flask-Sock, python-engineio): it reads
  ``environ['gunicorn.socket']``, does everything itself, and ends the request by raising
  ``StopIteration`` or returning an "already handled" sentinel; the server then writes nothing,
  logs no error and never reuses the connection;
* an ordinary HTTP response (a refusal such as 403), sent as usual; the connection then closes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ..http.events import END_OF_MESSAGE, RequestHead
from ..http.response import error_response
from ..websocket.blocking import HandedOverSocket, Registry, WebSocket
from ..websocket.handshake import HandshakeError, check_upgrade
from ..wsgi import ALREADY_HANDLED, InputStream, Response, build_environ, closing

if TYPE_CHECKING:
    from .pump import Connection

log = logging.getLogger("appserver.worker")


def already_handled(result: object) -> bool:
    """Our sentinel, or gunicorn's and eventlet's when the app uses theirs (looked up, never
    imported)."""
    if result is ALREADY_HANDLED:
        return True
    for module, name in (("gunicorn.workers.base_async", "ALREADY_HANDLED"),
                         ("eventlet.wsgi", "ALREADY_HANDLED")):
        loaded = sys.modules.get(module)
        if loaded is not None and result is getattr(loaded, name, None):
            return True
    return False


def serve_websocket(conn: Connection, head: RequestHead) -> bool:
    """Serve one upgrade request; always False: the connection is never reused afterwards."""
    state = conn.state
    registry: Registry | None = state.websockets
    target = head.target.decode("latin-1", "replace")
    if registry is None:
        log.warning("WebSocket upgrade for %s refused: the %s worker serves one request at a time "
                    "and cannot hold a connection open; use -k gthread or an async worker class",
                    target, state.config.effective_worker_class)
        conn.send_quietly(error_response(
            501, f"WebSocket needs a worker class that holds connections; this one is "
            f"{state.config.effective_worker_class} (use -k gthread)"))
        return False
    if state.stopping:
        # A retiring worker must not take on a connection that outlives it.
        conn.send_quietly(error_response(503, "this worker is restarting; try again"))
        return False
    try:
        key, offered = check_upgrade(head)
    except HandshakeError as exc:
        conn.send_quietly(error_response(exc.status, exc.detail, extra_headers=exc.headers))
        return False
    if not registry.reserve():
        log.warning("WebSocket upgrade for %s refused: %d WebSockets open in this worker "
                    "(--websocket-max-connections)", target, registry.limit)
        conn.send_quietly(error_response(503, "too many WebSockets open; try again later"))
        return False
    ws: WebSocket | None = None
    ident = threading.get_ident()
    state.long_lived.add(ident)  # a WebSocket's thread is not a stuck request
    try:
        event = conn.parser.next_event()
        assert event is END_OF_MESSAGE, event
        conn.sock.settimeout(None)
        trailing, conn.parser.trailing = conn.parser.trailing, b""
        ws = WebSocket(conn.sock, key, offered, max_message_size=state.config.websocket_max_message_size,
                       trailing=trailing, on_open=registry.opened)
        environ = build_environ(state.wsgi, head, InputStream(lambda: b""), peer=conn.peer,
                                local=conn.local, is_unix=conn.is_unix)
        environ["wsgi.websocket"] = ws
        # The library that takes the connection over gets its own descriptor of it: when the app
        # returns, the server closes only its own, and a library thread still using the socket
        # (simple-websocket's reader sends the reply to the client's close after the app's
        # receive() has already returned) is not cut off mid-handshake.
        # Over TLS there is no second descriptor to give (the TLS state lives in this socket
        # object): the library gets the connection's own socket.
        handed = HandedOverSocket((lambda: conn.sock) if conn.tls else conn.sock.dup, trailing)
        environ["gunicorn.socket"] = handed
        hijacked = False
        try:
            hijacked = _run_app(conn, head, environ, ws)
        finally:
            if hijacked and conn.tls:
                conn.closed = True  # the library's socket: closed with its last reference
            elif hijacked:
                # Close our descriptor now, without the lingering close's shutdown and reads:
                # they would end the library's connection and steal its bytes.  The library
                # closes its own (or it is closed with the last reference to it).
                conn.close()
            else:
                handed.discard()
    finally:
        state.long_lived.discard(ident)
        registry.release(ws if ws is not None and ws.accepted else None)
    return False


def _run_app(conn: Connection, head: RequestHead, environ: dict[str, Any], ws: WebSocket) -> bool:
    """Run the app; True when a library took the connection over (hijacked)."""
    state = conn.state
    hijacked = False
    response = Response(conn.send, head.method, head.version, keep_alive=False)
    started = time.monotonic()
    status = "101 Switching Protocols"
    try:
        result: Any
        try:
            result = state.app(environ, response.start_response)
        except StopIteration:
            result = ALREADY_HANDLED  # Flask-Sock and engineio end a hijacked request this way
        if ws.accepted:
            closing(result)
            ws.finish()
        elif already_handled(result):
            hijacked = True  # the library owns the connection: nothing more is written on it
        else:
            try:
                conn.write_result(response, result)
            finally:
                closing(result)
            status = response.status or "-"
    except Exception as exc:
        if ws.accepted:
            log.error("app error in WebSocket %s", head.target.decode("latin-1", "replace"),
                      exc_info=exc)
            ws.close(1011, "internal error")
            ws.finish()
        else:
            conn.app_failed(exc, head, response)
            status = response.status or "500 Internal Server Error"
    state.access_log.log(environ, status, response.headers, response.bytes_sent,
                         time.monotonic() - started)
    return hijacked
