"""The sample app's chat without a server (an in-process broadcast): the message rules, the endpoint's flow with
stand-in WebSockets, and the page.  (Through nginx: test_websocket_locations.py; in a browser:
tests/browser/test_chat.py.)"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest

from appserver.broadcast import Broadcast, MemoryBackend, PublishError
from sample_app.chat import MAX_NAME, MAX_TEXT, ROOM, chat_socket, parse_message

from .test_sample_app import call


class FakeWebSocket:
    """``wsgi.websocket`` stand-in: ``receive()`` blocks for what the test ``say``s (None once
    ``hang_up``); ``send()`` records, or raises once ``gone`` (a client that went away)."""

    def __init__(self, gone: bool = False) -> None:
        self.incoming: queue.SimpleQueue[str | bytes | None] = queue.SimpleQueue()
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.gone = gone
        self._lock = threading.Condition()

    def say(self, *messages: str | bytes) -> None:
        for message in messages:
            self.incoming.put(message)

    def hang_up(self) -> None:
        self.incoming.put(None)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        return self.incoming.get(timeout=10)

    def send(self, data: str | bytes) -> None:
        if self.gone:
            raise ConnectionError("the WebSocket is closed")
        assert isinstance(data, str)
        with self._lock:
            self.sent.append(json.loads(data))
            self._lock.notify_all()

    def close(self, code: int = 1000, reason: str = "") -> None:
        with self._lock:
            self.closed_with = code
            self.gone = True
            self._lock.notify_all()
        self.hang_up()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            assert self._lock.wait_for(lambda: predicate(self.sent), timeout=10), self.sent
            return list(self.sent)


def connect(ws: FakeWebSocket, broadcast: Broadcast) -> threading.Thread:
    """Run the endpoint for ``ws`` in a thread of its own, as the gthread worker does."""
    def start_response(*args: Any) -> None:
        raise AssertionError("a WebSocket endpoint answers no HTTP response")

    def run() -> None:
        assert list(chat_socket({"wsgi.websocket": ws}, start_response, broadcast)) == []

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ws.wait_for(lambda sent: any(e["type"] == "welcome" for e in sent))
    return thread


def of_type(kind: str, sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in sent if e["type"] == kind]


def test_a_message_reaches_everyone_in_the_room() -> None:
    bc = Broadcast()
    listener, speaker = FakeWebSocket(), FakeWebSocket()
    connect(listener, bc)
    done = connect(speaker, bc)
    welcome = speaker.sent[0]
    assert welcome["type"] == "welcome" and welcome["room"] == "memory"
    assert welcome["worker"] == os.getpid() and welcome["clients"] == 2
    speaker.say(json.dumps({"name": "  Ada   L. ", "text": "hello"}))
    sent = listener.wait_for(lambda sent: bool(of_type("message", sent)))
    message = of_type("message", sent)[0]
    assert (message["name"], message["text"]) == ("Ada L.", "hello")  # whitespace folded
    speaker.hang_up()
    done.join(10)
    sent = listener.wait_for(lambda sent: any(e.get("event") == "leave" for e in sent))
    assert sent[-1] == {"type": "presence", "event": "leave", "name": welcome["name"],
                        "worker": os.getpid()}
    assert bc.subscribers(ROOM) == 1  # the speaker left when its socket closed
    listener.hang_up()


def test_a_bad_message_gets_an_error_for_its_sender_only() -> None:
    bc = Broadcast()
    listener, speaker = FakeWebSocket(), FakeWebSocket()
    connect(listener, bc)
    connect(speaker, bc)
    speaker.say("not json", b"\x00", json.dumps({"text": "ok"}))
    sent = listener.wait_for(lambda sent: bool(of_type("message", sent)))
    assert [(e["name"], e["text"]) for e in of_type("message", sent)] == [
        (speaker.sent[0]["name"], "ok")]
    errors = [e["text"] for e in speaker.wait_for(lambda s: len(of_type("error", s)) == 2)
              if e["type"] == "error"]
    assert errors == ['send JSON: {"name": "...", "text": "..."}', "send text (JSON), not binary"]
    assert not of_type("error", listener.sent)
    for ws in (listener, speaker):
        ws.hang_up()


def test_a_message_that_cannot_be_published_comes_back_as_an_error() -> None:
    class Down(MemoryBackend):
        def publish(self, room: str, data: str) -> int:
            raise PublishError("Redis at unix:///x is unreachable")

    bc = Broadcast(Down())
    speaker = FakeWebSocket()
    done = connect(speaker, bc)
    speaker.say(json.dumps({"text": "hello?"}))
    sent = speaker.wait_for(lambda sent: len(of_type("error", sent)) == 2)  # join, then message
    assert all(e["text"] == "not delivered: Redis at unix:///x is unreachable"
               for e in of_type("error", sent))
    speaker.hang_up()
    done.join(10)
    assert not done.is_alive()


def test_a_client_that_does_not_keep_up_is_closed_with_1013() -> None:
    bc = Broadcast(queue_size=4)
    stuck = FakeWebSocket()
    release = threading.Event()
    real_send = stuck.send

    def slow_send(data: str | bytes) -> None:  # the relay blocks on this client's writes
        if json.loads(data)["type"] == "message":
            release.wait(10)
        real_send(data)

    stuck.send = slow_send  # type: ignore[method-assign]
    connect(stuck, bc)
    other = FakeWebSocket()
    connect(other, bc)
    for i in range(10):  # one at a time: the queue of 4 holds for a client that keeps up
        other.say(json.dumps({"text": str(i)}))
        other.wait_for(lambda sent, n=i + 1: len(of_type("message", sent)) == n)
    release.set()
    stuck.wait_for(lambda sent: stuck.closed_with is not None)
    assert stuck.closed_with == 1013
    other.hang_up()


def test_the_endpoint_leaves_quietly_when_its_own_client_is_gone() -> None:
    bc = Broadcast()

    def start_response(*args: Any) -> None:
        raise AssertionError("no HTTP response")

    # The welcome fails: no exception reaches the server, and the subscription is gone.
    assert list(chat_socket({"wsgi.websocket": FakeWebSocket(gone=True)}, start_response,
                            bc)) == []
    assert bc.subscribers(ROOM) == 0


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
                     "[redis]", "Without Redis"):
        assert fragment in page, fragment
    assert 'href="/chat"' in call("/")[2].decode()  # linked from the home page
