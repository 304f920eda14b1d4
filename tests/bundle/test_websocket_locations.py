"""The rendered nginx config's WebSocket locations, through real nginx and the real server.

The repository's settings (``nginx.websocket_locations = ["/ws/"]``, gthread, Redis) on free
ports; the sample app's chat at /ws/chat is the WebSocket app.  The clients are a few lines over
wsproto, a WebSocket library independent of the server's (which uses ``websockets``); the chat
page in a real browser is tests/browser/test_chat.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    Request,
    TextMessage,
)

from appserver.testing.stack import Stack, start_stack

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("nginx")

TIMEOUT = 10.0


class Client:
    """A WebSocket client on a blocking socket; every wait is bounded by TIMEOUT."""

    def __init__(self, url: str, path: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path)))
        self.handshake = self._next(lambda e: isinstance(e, AcceptConnection | RejectConnection))

    def _next(self, wanted: Any) -> Event:
        deadline = time.monotonic() + TIMEOUT
        while True:
            while self.events:
                event = self.events.popleft()
                if wanted(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing wanted arrived within {TIMEOUT}s")
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                raise AssertionError("the connection closed")

    def send(self, **message: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=json.dumps(message))))

    def receive(self, kind: str) -> dict[str, Any]:
        """The next event of the chat of type ``kind`` (others are skipped)."""
        while True:
            event = self._next(lambda e: isinstance(e, TextMessage | CloseConnection))
            assert isinstance(event, TextMessage), f"closed: {event}"
            data: dict[str, Any] = json.loads(event.data)
            if data["type"] == kind:
                return data

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:  # noqa: BLE001 - already closed or never opened
            pass
        self.sock.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with start_stack(settings_file=REPO / "settings.toml",
                     settings={"server": {"graceful_timeout": 5}}) as running:
        yield running
    assert running.stopped is not None and running.stopped.graceful, running.stopped


def test_chat_through_nginx(stack: Stack) -> None:
    alice, bob = Client(stack.url, "/ws/chat"), Client(stack.url, "/ws/chat")
    try:
        assert isinstance(alice.handshake, AcceptConnection)
        assert isinstance(bob.handshake, AcceptConnection)
        # Whichever workers they reached, the room spans them all (through Redis: [redis] local).
        assert alice.receive("welcome")["room"] == bob.receive("welcome")["room"] == "redis"
        alice.send(name="alice", text="hi bob")
        bob.send(name="bob", text="hi alice")
        for client in (alice, bob):
            got = {(m["name"], m["text"]) for m in (client.receive("message") for _ in range(2))}
            assert got == {("alice", "hi bob"), ("bob", "hi alice")}
        bob.send(text="")  # a bad message: an error for bob alone
        assert bob.receive("error")["text"] == "text must be a non-empty string"
    finally:
        alice.close()
        bob.close()


def test_upgrades_pass_only_on_websocket_locations(stack: Stack) -> None:
    # "/" is an ordinary location: nginx drops the Upgrade, the app serves its home page.
    client = Client(stack.url, "/")
    try:
        assert isinstance(client.handshake, RejectConnection)
        assert client.handshake.status_code == 200
    finally:
        client.sock.close()


def test_plain_get_on_the_websocket_path(stack: Stack) -> None:
    response = requests.get(stack.url_for("/ws/chat"), timeout=TIMEOUT)
    assert response.status_code == 400 and "WebSocket endpoint" in response.text
    assert response.headers["X-Served-By"] == "sample_app"


def test_chat_page_and_its_static_files(stack: Stack) -> None:
    page = requests.get(stack.url_for("/chat"), timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["X-Served-By"] == "sample_app"
    assert 'data-socket="/ws/chat"' in page.text
    for name in ("chat.js", "chat.css"):
        static = requests.get(stack.url_for(f"/static/{name}"), timeout=TIMEOUT)
        assert static.status_code == 200, name
        assert "X-Served-By" not in static.headers  # nginx served it, not the app
        assert static.content == (REPO / "sample_app" / "static" / name).read_bytes()
