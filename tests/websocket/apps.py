"""The WSGI apps of the WebSocket suite, behind one dispatcher (``app``) so one server serves all:

* ``/native/...``  -- the server's own API, ``environ['wsgi.websocket']`` (echo, server-side close,
  refusal with a plain HTTP answer, a handler that just holds the connection);
* ``/proto``       -- subprotocol negotiation with the native API;
* ``/flask/echo``  -- a Flask-Sock app, exactly as its documentation writes one;
* ``/raw/echo``    -- a bare WSGI app on ``simple_websocket.Server(environ)``, ending the hijacked
  request with the ``appserver.wsgi.ALREADY_HANDLED`` sentinel (Flask-Sock covers StopIteration);
* ``/hello``, ``/pid``, ``/events`` -- plain HTTP: a greeting, the worker's PID, and what the
  WebSocket handlers of this worker recorded (how each session ended), as JSON.

The library code is used unchanged; only these small apps are ours.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import simple_websocket
from flask import Flask
from flask_sock import Sock

from appserver.wsgi import ALREADY_HANDLED

Environ = dict[str, Any]

# What the handlers saw, per worker process (the WebSocket servers run one worker).
_events: list[dict[str, Any]] = []
_events_lock = threading.Lock()


def record(**event: Any) -> None:
    with _events_lock:
        _events.append(event)


def _text(start_response: Any, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# ---- the native API ------------------------------------------------------------------------


def native_echo(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Echo every message; the text "close CODE [REASON]" makes the server close instead."""
    ws = environ["wsgi.websocket"]
    count = 0
    while True:
        message = ws.receive()
        if message is None:
            break
        count += 1
        if isinstance(message, str) and message.startswith("close "):
            _, code, *reason = message.split(" ", 2)
            ws.close(int(code), reason[0] if reason else "")
            continue
        ws.send(message)
    record(route="native", tag=environ.get("QUERY_STRING", ""), messages=count,
           close_code=ws.close_code)
    return []


def native_hold(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Accept, then wait (receive) without ever sending: a long-lived idle WebSocket."""
    ws = environ["wsgi.websocket"]
    ws.accept()
    while ws.receive() is not None:
        pass
    record(route="hold", close_code=ws.close_code)
    return []


def native_flood(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Send 64 KiB messages as fast as the peer takes them, until a send fails (a peer that
    stopped reading fills its window, and the write then blocks until the server cuts it)."""
    ws = environ["wsgi.websocket"]
    ws.accept()
    sent, failure = 0, ""
    try:
        while True:
            ws.send(b"x" * 65536)
            sent += 1
    except Exception as exc:  # noqa: BLE001 - what ended the flood is what the test reads
        failure = type(exc).__name__
    record(route="flood", sent=sent, failure=failure)
    return []


def native_refuse(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Never touches the WebSocket: the upgrade is answered with an ordinary 403."""
    return _text(start_response, b"no WebSocket for you\n", "403 Forbidden")


def native_crash(environ: Environ, start_response: Any) -> Iterable[bytes]:
    ws = environ["wsgi.websocket"]
    ws.receive()
    raise RuntimeError("boom after the first message")


SUPPORTED = ["chat.v2", "chat.v1"]  # in our order of preference


def subprotocol(environ: Environ, start_response: Any) -> Iterable[bytes]:
    ws = environ["wsgi.websocket"]
    chosen = next((p for p in SUPPORTED if p in ws.subprotocols), None)
    ws.accept(chosen)
    ws.send(json.dumps({"offered": ws.subprotocols, "chosen": ws.subprotocol}))
    while (message := ws.receive()) is not None:
        ws.send(message)
    return []


# ---- Flask-Sock, as documented --------------------------------------------------------------

flask_app = Flask(__name__)
sock = Sock(flask_app)


@sock.route("/flask/echo")
def flask_echo(ws: simple_websocket.Server) -> None:
    try:
        while True:
            data = ws.receive()
            if data == "bye":
                ws.close(4000, "flask says bye")
                break
            ws.send(data)
    finally:
        record(route="flask", close_reason=ws.close_reason)


# ---- a bare WSGI app on simple-websocket -----------------------------------------------------


def raw_echo(environ: Environ, start_response: Any) -> object:
    ws = simple_websocket.Server(environ)
    try:
        while True:
            data = ws.receive()
            ws.send(data)
    except simple_websocket.ConnectionClosed as exc:
        record(route="raw", close_reason=exc.reason)
    return ALREADY_HANDLED


# ---- plain HTTP and the dispatcher ----------------------------------------------------------


def hello(environ: Environ, start_response: Any) -> Iterable[bytes]:
    delay = float(environ.get("QUERY_STRING", "").partition("delay=")[2] or 0)
    if delay:
        time.sleep(delay)
    return _text(start_response, b"hello\n")


def pid(environ: Environ, start_response: Any) -> Iterable[bytes]:
    return _text(start_response, str(os.getpid()).encode())


def events(environ: Environ, start_response: Any) -> Iterable[bytes]:
    with _events_lock:
        body = json.dumps(_events).encode()
    return _text(start_response, body)


ROUTES = {
    "/native/echo": native_echo,
    "/native/hold": native_hold,
    "/native/flood": native_flood,
    "/native/refuse": native_refuse,
    "/native/crash": native_crash,
    "/proto": subprotocol,
    "/raw/echo": raw_echo,
    "/hello": hello,
    "/pid": pid,
    "/events": events,
}


def app(environ: Environ, start_response: Any) -> object:
    path = environ["PATH_INFO"]
    if path.startswith("/flask/"):
        return flask_app(environ, start_response)
    handler = ROUTES.get(path)
    if handler is None:
        return _text(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)
