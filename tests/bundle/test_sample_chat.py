"""The sample app's chat without a server: the room, the message rules, the endpoint's flow with
stand-in WebSockets, and the page.  (Through nginx: test_websocket_locations.py; in a browser:
tests/browser/test_chat.py.)"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

import pytest

from sample_app.chat import MAX_NAME, MAX_TEXT, ChatRoom, chat_socket, parse_message

from .test_sample_app import call


class FakeWebSocket:
    """``wsgi.websocket`` stand-in: ``receive()`` hands out ``incoming`` then None; ``send()``
    records, or raises once ``gone`` (a client that went away)."""

    def __init__(self, *incoming: str | bytes, gone: bool = False) -> None:
        self.incoming: deque[str | bytes] = deque(incoming)
        self.sent: list[dict[str, Any]] = []
        self.gone = gone

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        return self.incoming.popleft() if self.incoming else None

    def send(self, data: str | bytes) -> None:
        if self.gone:
            raise ConnectionError("the WebSocket is closed")
        assert isinstance(data, str)
        self.sent.append(json.loads(data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.gone = True


def serve(ws: FakeWebSocket, room: ChatRoom) -> None:
    def start_response(*args: Any) -> None:
        raise AssertionError("a WebSocket endpoint answers no HTTP response")

    assert list(chat_socket({"wsgi.websocket": ws}, start_response, room)) == []


def test_a_message_reaches_everyone_in_the_room() -> None:
    room = ChatRoom()
    listener = FakeWebSocket()
    room.join(listener)
    speaker = FakeWebSocket(json.dumps({"name": "  Ada   L. ", "text": "hello"}))
    serve(speaker, room)
    kinds = [(e["type"], e.get("event")) for e in speaker.sent]
    assert kinds == [("welcome", None), ("presence", "join"), ("message", None)]
    assert speaker.sent[0]["clients"] == 2 and speaker.sent[0]["name"] == "guest-2"
    message = listener.sent[1]
    assert (message["name"], message["text"]) == ("Ada L.", "hello")  # whitespace folded
    assert listener.sent[-1] == {"type": "presence", "event": "leave", "name": "guest-2",
                                 "clients": 1}
    assert len(room) == 1  # the speaker left when its socket closed


def test_a_bad_message_gets_an_error_for_its_sender_only() -> None:
    room = ChatRoom()
    listener = FakeWebSocket()
    room.join(listener)
    speaker = FakeWebSocket("not json", b"\x00", json.dumps({"text": "ok"}))
    serve(speaker, room)
    errors = [e["text"] for e in speaker.sent if e["type"] == "error"]
    assert errors == ['send JSON: {"name": "...", "text": "..."}', "send text (JSON), not binary"]
    messages = [e for e in listener.sent if e["type"] == "message"]
    assert messages == [{"type": "message", "name": "guest-2", "text": "ok",
                         "worker": speaker.sent[0]["worker"]}]


def test_a_client_that_went_away_is_dropped() -> None:
    room = ChatRoom()
    gone = FakeWebSocket(gone=True)
    room.join(gone)
    here = FakeWebSocket()
    room.join(here)
    assert room.broadcast({"type": "message", "name": "x", "text": "y"}) == 1
    assert len(room) == 1 and here.sent[0]["text"] == "y"


def test_the_endpoint_leaves_quietly_when_its_own_client_is_gone() -> None:
    room = ChatRoom()
    serve(FakeWebSocket(gone=True), room)  # the welcome fails: no exception reaches the server
    assert len(room) == 0


def test_broadcasts_and_membership_from_many_threads() -> None:
    room = ChatRoom()
    members = [FakeWebSocket() for _ in range(20)]
    barrier = threading.Barrier(len(members))

    def member(ws: FakeWebSocket) -> None:
        barrier.wait()
        room.join(ws)
        for i in range(50):
            room.broadcast({"type": "message", "name": "n", "text": str(i)})

    threads = [threading.Thread(target=member, args=(ws,)) for ws in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(room) == 20
    # The last member to join got at least its own 50 messages; no send was lost or doubled
    # for a member present from start to end (each gets every message sent after it joined).
    total = sum(len(ws.sent) for ws in members)
    assert 20 * 50 <= total <= 20 * 20 * 50


@pytest.mark.parametrize(("raw", "error"), [
    ('["a list"]', "send a JSON object"),
    ('{"text": 5}', "text must be a non-empty string"),
    ('{"text": "   "}', "text must be a non-empty string"),
    ('{"text": "x", "name": 3}', "name must be a string"),
    (json.dumps({"text": "x" * (MAX_TEXT + 1)}), f"longer than {MAX_TEXT}"),
])
def test_parse_message_rejects(raw: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_message(raw, "guest-1")


def test_parse_message_names() -> None:
    assert parse_message('{"text": "hi"}', "guest-1") == ("guest-1", "hi")
    assert parse_message('{"text": "hi", "name": " \\t "}', "guest-1") == ("guest-1", "hi")
    assert parse_message(json.dumps({"text": "hi", "name": "n" * 99}), "g")[0] == "n" * MAX_NAME


def test_the_socket_path_without_an_upgrade_is_400() -> None:
    status, _, body = call("/ws/chat")
    assert status == "400 Bad Request"
    assert b"WebSocket endpoint" in body


def test_the_chat_page() -> None:
    status, headers, body = call("/chat")
    assert status == "200 OK" and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    for fragment in ('data-socket="/ws/chat"', 'src="/static/chat.js"', 'href="/static/chat.css"',
                     'id="chat-status" data-state="connecting"', 'id="messages"',
                     "to the same worker process", "Redis"):
        assert fragment in page, fragment
    assert 'href="/chat"' in call("/")[2].decode()  # linked from the home page
