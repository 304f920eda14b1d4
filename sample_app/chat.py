"""The sample app's chat: a page (``GET /chat``) whose JavaScript opens a WebSocket to
``/ws/chat``, and the WebSocket endpoint that relays what each client says to every client.

It uses the server's native API, ``environ['wsgi.websocket']`` (``receive()``, ``send()``,
``close()``), and :mod:`appserver.broadcast` for the room; the page's script and style are
static files (``/static/chat.js``, ``/static/chat.css``), served by nginx.

Design notes
------------
* Across workers and hosts: the room is a broadcast room.  With ``APPSERVER_REDIS_URL`` set (the
  bundle sets it when ``[redis]`` is on) every message goes through Redis and reaches every
  client of every worker of every replica; without it the room is in-process and reaches the
  clients of one worker only.
* Threads: with the ``gthread`` worker each WebSocket's handler blocks in ``receive()`` and
  publishes what its client says; a second thread per WebSocket (a greenlet under gevent or
  eventlet) takes the room's messages from the WebSocket's subscription and sends them.  A
  client that does not read fills only its own queue: when it is full the room drops it, and
  the relay closes it with 1013 (try again later), which the page answers by reconnecting.
* Failures are said, not swallowed: a message that cannot be published (Redis is down) comes
  back to its sender as an error, and every client is told when this worker loses the room and
  when it gets it back (messages sent meanwhile by others do not reach it).
"""

from __future__ import annotations

import html
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from appserver.broadcast import OVERFLOW, Broadcast, PublishError, Subscription

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

SOCKET_PATH = "/ws/chat"  # under nginx.websocket_locations ("/ws/" in settings.toml)
ROOM = "lobby"
MAX_NAME = 40
MAX_TEXT = 2000
RELAY_JOIN_TIMEOUT = 5.0
# Redis when APPSERVER_REDIS_URL is set, in-process otherwise; it connects on first use, in the
# worker (never in the master, even with --preload).
BROADCAST = Broadcast.from_environ(prefix="sample_app:chat:")
_guests = itertools.count(1)

LOST = "This worker lost the link to the other workers: messages sent elsewhere may not arrive."
RESTORED = "The link to the other workers is back."


class WebSocketLike(Protocol):
    """What the chat needs of ``environ['wsgi.websocket']``."""

    def receive(self, timeout: float | None = None) -> str | bytes | None: ...

    def send(self, data: str | bytes) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


def relay(sub: Subscription, ws: WebSocketLike) -> None:
    """The second thread of a WebSocket: the room's messages to the client, until either ends."""
    try:
        for event in sub:
            if event.type == "message":
                ws.send(event.data)
            else:
                ws.send(json.dumps({"type": "system", "event": event.type,
                                    "text": LOST if event.type == "lost" else RESTORED}))
        if sub.close_code == OVERFLOW:
            ws.close(OVERFLOW, "too slow: messages piled up")
    except (ConnectionError, OSError):
        pass  # the client went away; the handler's receive() returns None and it leaves
    finally:
        sub.close()


def parse_message(raw: str | bytes, default_name: str) -> tuple[str, str]:
    """A client's message: JSON ``{"name": ..., "text": ...}``; ValueError says what is wrong."""
    if isinstance(raw, bytes):
        raise ValueError("send text (JSON), not binary")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError('send JSON: {"name": "...", "text": "..."}') from None
    if not isinstance(data, dict):
        raise ValueError('send a JSON object: {"name": "...", "text": "..."}')
    text, name = data.get("text"), data.get("name") or default_name
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if not isinstance(name, str):
        raise ValueError("name must be a string")
    if len(text) > MAX_TEXT:
        raise ValueError(f"text is longer than {MAX_TEXT} characters")
    return " ".join(name.split())[:MAX_NAME] or default_name, text


def chat_socket(environ: Environ, start_response: StartResponse,
                broadcast: Broadcast = BROADCAST) -> Iterable[bytes]:
    """``/ws/chat``: join the room, publish each message, relay the room's, leave when closed."""
    ws: WebSocketLike | None = environ.get("wsgi.websocket")
    if ws is None:
        # A plain GET (or a proxy that dropped the Upgrade header).  400 as RFC 6455 §4.2.1 does
        # for a bad handshake: 426 would need an Upgrade header, which PEP 3333 forbids an app
        # to send (hop-by-hop).
        body = b"this is a WebSocket endpoint: connect with new WebSocket(...)\n"
        start_response("400 Bad Request", [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
            ("X-Served-By", "sample_app")])
        return [body]
    worker = os.getpid()
    guest = f"guest-{worker}-{next(_guests)}"  # unique across workers
    sub = broadcast.subscribe(ROOM)
    sender = threading.Thread(target=relay, args=(sub, ws), name="chat-relay", daemon=True)

    def publish(event: dict[str, Any]) -> None:
        try:
            broadcast.publish(ROOM, json.dumps(event))
        except PublishError as exc:
            # Not delivered to anyone: its sender hears so (the page shows it as an error).
            ws.send(json.dumps({"type": "error", "text": f"not delivered: {exc}"}))

    try:
        # Only the new client learns its guest name and which worker it reached.
        ws.send(json.dumps({"type": "welcome", "name": guest, "worker": worker,
                            "room": broadcast.backend.name,
                            "clients": broadcast.subscribers(ROOM)}))
        sender.start()
        publish({"type": "presence", "event": "join", "name": guest, "worker": worker})
        while True:
            raw = ws.receive()
            if raw is None:  # closed by the client, or by the server (ping timeout, shutdown)
                break
            try:
                name, text = parse_message(raw, guest)
            except ValueError as exc:
                ws.send(json.dumps({"type": "error", "text": str(exc)}))
                continue
            publish({"type": "message", "name": name, "text": text, "worker": worker})
    except (ConnectionError, OSError):
        pass  # this client went away while we wrote to it: nothing to report
    finally:
        sub.close()
        if sender.is_alive():
            sender.join(RELAY_JOIN_TIMEOUT)
        try:
            broadcast.publish(ROOM, json.dumps({"type": "presence", "event": "leave",
                                                "name": guest, "worker": worker}))
        except PublishError:
            pass  # nobody to tell: its client is gone, and the room is unreachable
    return []


def chat_html() -> str:
    """The chat page; its script finds the socket's path in ``data-socket`` (shared with
    sample_app.asgi)."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>appserver chat</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="stylesheet" href="/static/chat.css">
<script src="/static/chat.js" defer></script>
</head>
<body>
<header><img src="/static/logo.svg" alt="" width="48" height="48"><h1>Chat</h1></header>
<p id="chat-status" data-state="connecting" role="status">Connecting…</p>
<ol id="messages" aria-live="polite"></ol>
<form id="chat-form" data-socket="{html.escape(SOCKET_PATH)}" autocomplete="off">
<input id="chat-name" name="name" maxlength="{MAX_NAME}" placeholder="your name" aria-label="Name">
<input id="chat-text" name="text" maxlength="{MAX_TEXT}" placeholder="Say something" required
       aria-label="Message">
<button type="submit">Send</button>
</form>
<p class="note">Messages travel over a WebSocket (<code>{html.escape(SOCKET_PATH)}</code>) through
nginx to the app server.  The worker that receives one publishes it to the room through Redis
(<code>[redis]</code> in settings.toml), and every worker relays it to its own clients, so
everyone sees everything, whichever worker or replica they reached.  Without Redis the room
lives in one worker process and reaches the clients of that worker only.</p>
<p><a href="/">Back to the sample app</a></p>
</body>
</html>
"""


def chat_page(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """``/chat``: the page."""
    body = chat_html().encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                              ("X-Served-By", "sample_app")])
    return [body]
