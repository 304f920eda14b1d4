"""The sample app's chat: a page (``GET /chat``) whose JavaScript opens a WebSocket to
``/ws/chat``, and the WebSocket endpoint that relays what each client says to every client.

It uses the server's native API, ``environ['wsgi.websocket']`` (``receive()``, ``send()``,
``close()``); the page's script and style are static files (``/static/chat.js``,
``/static/chat.css``), served by nginx.

Design notes
------------
* Across workers: the room is a module-level object, so each worker process of the server has a
  room of its own, and a message reaches the clients connected to the same worker only.  The
  bundle's settings.toml runs one worker, so everyone sees everything.  With several workers (or
  several hosts) a real deployment puts a pub/sub such as Redis behind the room: each worker
  publishes what its clients say and relays what it receives to its own clients.
* Threads: with the ``gthread`` worker every WebSocket runs in a thread of its own, which blocks
  in ``receive()``; a message is broadcast from the sender's thread straight to the other
  sockets.  The room's lock guards only its membership: a broadcast copies the members under the
  lock and sends outside it, so a slow client never holds the lock (and never stops joins and
  leaves).  ``send()`` is safe from any thread: the server serialises the writes of each socket.
* A send to a client that has just gone raises; that client is dropped from the room, and its
  own thread leaves as well once its ``receive()`` returns None.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

SOCKET_PATH = "/ws/chat"  # under nginx.websocket_locations ("/ws/" in settings.toml)
MAX_NAME = 40
MAX_TEXT = 2000


class WebSocketLike(Protocol):
    """What the chat needs of ``environ['wsgi.websocket']``."""

    def receive(self, timeout: float | None = None) -> str | bytes | None: ...

    def send(self, data: str | bytes) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class ChatRoom:
    """The clients of one worker process; every method may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[WebSocketLike, str] = {}
        self._guests = itertools.count(1)

    def join(self, ws: WebSocketLike) -> tuple[str, int]:
        """Add a client; return the guest name it starts with and how many clients are here."""
        with self._lock:
            name = f"guest-{next(self._guests)}"
            self._members[ws] = name
            return name, len(self._members)

    def leave(self, ws: WebSocketLike) -> int:
        with self._lock:
            self._members.pop(ws, None)
            return len(self._members)

    def __len__(self) -> int:
        with self._lock:
            return len(self._members)

    def broadcast(self, event: dict[str, Any]) -> int:
        """Send ``event`` (as JSON) to every client here; return how many got it."""
        data = json.dumps(event)
        with self._lock:
            members = list(self._members)
        delivered = 0
        for ws in members:
            try:
                ws.send(data)
                delivered += 1
            except (ConnectionError, OSError):
                self.leave(ws)  # it went away between the copy and the send
        return delivered


ROOM = ChatRoom()


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
                room: ChatRoom = ROOM) -> Iterable[bytes]:
    """``/ws/chat``: join the room, relay each message to everyone here, leave when closed."""
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
    guest, count = room.join(ws)
    try:
        # Only the new client learns its guest name and which worker it reached.
        ws.send(json.dumps({"type": "welcome", "name": guest, "worker": worker,
                            "clients": count}))
        room.broadcast({"type": "presence", "event": "join", "name": guest, "clients": count})
        while True:
            raw = ws.receive()
            if raw is None:  # closed by the client, or by the server (ping timeout, shutdown)
                break
            try:
                name, text = parse_message(raw, guest)
            except ValueError as exc:
                ws.send(json.dumps({"type": "error", "text": str(exc)}))
                continue
            room.broadcast({"type": "message", "name": name, "text": text, "worker": worker})
    except (ConnectionError, OSError):
        pass  # this client went away while we wrote to it: nothing to report
    finally:
        count = room.leave(ws)
        room.broadcast({"type": "presence", "event": "leave", "name": guest, "clients": count})
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
nginx to the app server, whose worker relays each one to every client connected
<em>to the same worker process</em>.  This deployment runs one worker, so everyone sees
everything; with several workers each has its own set of clients, and a real deployment puts a
pub/sub such as Redis behind the room so that every worker relays every message.</p>
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
