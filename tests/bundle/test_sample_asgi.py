"""The sample app's ASGI twin (sample_app/asgi.py, Starlette), served by settings.asgi.toml.

In process (Starlette's TestClient, no server): the same answers as the WSGI app, and the chat's
flow over the ASGI ``websocket`` scope.  Through the real stack (the local stack that `appserver
up --settings settings.asgi.toml` runs: nginx, the unix socket, the asyncio class with interface
"asgi"): every check of tests/bundle/endpoints.py, as the WSGI app passes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from appserver.bundle.loading import load_settings
from appserver.testing.plugin import StackFactory
from appserver.testing.stack import Stack
from sample_app.asgi import app

from . import endpoints
from .conftest import REPO
from .test_sample_app import call, multipart

SETTINGS = REPO / "settings.asgi.toml"
BODY_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


# ---- the settings file -----------------------------------------------------------------------


def test_the_settings_choose_the_asyncio_class_with_asgi() -> None:
    from appserver.bundle.render import render_docker

    loaded = load_settings(SETTINGS)
    assert loaded.settings.app.interface == "asgi"
    config = render_docker(loaded, REPO / "deploy" / "asgi")["deploy/appserver.toml"]
    assert 'worker_class = "asyncio"\ninterface = "asgi"\n' in config
    assert 'wsgi_app = "sample_app.asgi:app"' in config
    assert "threads" not in config


# ---- in process ----------------------------------------------------------------------------


def test_pages_answer_as_the_wsgi_app_does(client: TestClient) -> None:
    for path in ("/healthz", "/chat"):
        status, headers, body = call(path)
        reply = client.get(path)
        assert (reply.status_code, reply.content) == (int(status.split()[0]), body), path
        assert reply.headers["content-type"] == headers["Content-Type"]
        assert reply.headers["x-served-by"] == "sample_app"
        assert reply.headers["cache-control"] == "no-store"
    home = client.get("/")
    assert home.status_code == 200 and '<strong id="scheme">http</strong>' in home.text
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    info = client.get("/api/info?x=1").json()
    assert set(info) == set(json.loads(call("/api/info")[2]))
    assert (info["path"], info["query"], info["method"]) == ("/api/info", "x=1", "GET")


def test_echo_and_its_errors(client: TestClient) -> None:
    assert client.post("/api/echo", json={"a": [1, "ü"]}).json()["echo"] == {"a": [1, "ü"]}
    bad = client.post("/api/echo", content=b"{not json")
    assert bad.status_code == 400 and bad.text.startswith("not JSON:")
    assert bad.headers["x-served-by"] == "sample_app"


def test_upload_reports_what_the_wsgi_app_reports(client: TestClient) -> None:
    data = os.urandom(100_000)
    body = multipart("b0undary", [("note", None, b"hi"), ("file", "blob.bin", data)])
    content_type = "multipart/form-data; boundary=b0undary"
    reply = client.post("/upload", content=body, headers={"Content-Type": content_type})
    assert reply.status_code == 200
    assert reply.json() == json.loads(call("/upload", "POST", body, content_type)[2])
    assert reply.json()["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.post("/upload", content=b"x").status_code == 415
    broken = client.post("/upload", content=b"--b0undary\r\n",
                         headers={"Content-Type": content_type})
    assert broken.status_code == 400


def test_stream_and_its_parameters(client: TestClient) -> None:
    reply = client.get("/stream?lines=3&delay=0")
    assert [line.split(" at ")[0] for line in reply.text.splitlines()] == [
        "line 1 of 3", "line 2 of 3", "line 3 of 3"]
    assert reply.headers["x-accel-buffering"] == "no"
    assert "content-length" not in reply.headers
    assert client.get("/stream?lines=x").status_code == 400


def test_not_found_wrong_method_and_a_plain_get_of_the_socket(client: TestClient) -> None:
    missing = client.get("/nope")
    assert (missing.status_code, missing.text) == (404, "no page at /nope\n")
    assert missing.headers["x-served-by"] == "sample_app"
    wrong = client.post("/api/info")
    assert (wrong.status_code, wrong.text) == (405, "POST not allowed here\n")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
    plain = client.get("/ws/chat")
    assert plain.status_code == 400 and "WebSocket endpoint" in plain.text
    assert client.head("/healthz").status_code == 200


def _events(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.receive_text()) for _ in range(count)]


def test_the_chat_relays_to_everyone_in_the_room(client: TestClient) -> None:
    with client.websocket_connect("/ws/chat") as alice:
        welcome, joined = _events(alice, 2)
        assert welcome["type"] == "welcome" and welcome["worker"] == os.getpid()
        assert joined == {"type": "presence", "event": "join", "name": welcome["name"],
                          "worker": os.getpid()}
        with client.websocket_connect("/ws/chat") as bob:
            bob_welcome, _ = _events(bob, 2)
            assert bob_welcome["clients"] == 2 and bob_welcome["room"] == "memory"
            assert _events(alice, 1)[0]["name"] == bob_welcome["name"]  # bob joined
            bob.send_text(json.dumps({"name": "  Bob   B ", "text": "hi all"}))
            for ws in (alice, bob):
                message = _events(ws, 1)[0]
                assert (message["type"], message["name"], message["text"]) == (
                    "message", "Bob B", "hi all")
            bob.send_text("not json")
            assert _events(bob, 1)[0]["type"] == "error"
            bob.send_bytes(b"{}")
            assert _events(bob, 1)[0] == {"type": "error", "text": "send text (JSON), not binary"}
            # Closed, and the room told, before the session ends: TestClient cancels the app's
            # task when the block ends, which a real server does not.
            bob.close(1000)
            left = _events(alice, 1)[0]
            assert (left["event"], left["name"]) == ("leave", bob_welcome["name"])


# ---- through nginx: the local stack of `appserver up --settings settings.asgi.toml` ----------


@pytest.fixture(scope="module")
def stack(appserver_stack_factory: StackFactory, nginx: Any) -> Iterator[Stack]:
    overrides = {"nginx": {"client_max_body_size": "1m"}}
    with appserver_stack_factory(settings_file=SETTINGS, settings=overrides) as running:
        yield running
    assert running.stopped is not None and running.stopped.graceful, running.stopped


@pytest.mark.parametrize("check", endpoints.CHECKS, ids=lambda check: check.__name__)
def test_endpoint(stack: Stack, check: Callable[[endpoints.Target], None]) -> None:
    check(endpoints.Target(stack.url, client_address="127.0.0.1", body_limit=BODY_LIMIT))


def test_the_stack_runs_the_asgi_app_on_the_asyncio_class(stack: Stack) -> None:
    config = (stack.run_dir / "appserver.toml").read_text()
    assert 'worker_class = "asyncio"' in config and 'interface = "asgi"' in config
    info = requests.get(stack.url + "/api/info", timeout=10).json()
    assert info["server_software"].startswith("ASGI 3.0")
    chat = requests.get(stack.url + "/chat", timeout=10)
    assert chat.status_code == 200 and 'data-socket="/ws/chat"' in chat.text
    assert requests.get(stack.url + "/static/chat.js", timeout=10).status_code == 200


def test_the_chat_through_nginx(stack: Stack) -> None:
    """The chat on the server's ASGI WebSockets, through nginx's /ws/ location."""
    from websockets.sync.client import connect

    url = stack.url.replace("http://", "ws://") + "/ws/chat"

    def events(ws: Any, count: int) -> list[dict[str, Any]]:
        return [json.loads(ws.recv(10)) for _ in range(count)]

    with connect(url, open_timeout=10) as alice:
        welcome, joined = events(alice, 2)
        assert welcome["type"] == "welcome" and joined["event"] == "join"
        assert welcome["worker"] == requests.get(stack.url + "/api/info", timeout=10).json()["pid"]
        with connect(url, open_timeout=10) as bob:
            bob_welcome, _ = events(bob, 2)
            assert bob_welcome["clients"] == 2  # one worker, in-process room
            assert events(alice, 1)[0]["name"] == bob_welcome["name"]
            bob.send(json.dumps({"name": "Bob", "text": "through nginx"}))
            for ws in (alice, bob):
                assert events(ws, 1)[0]["text"] == "through nginx"
        left = events(alice, 1)[0]
        assert (left["event"], left["name"]) == ("leave", bob_welcome["name"])
