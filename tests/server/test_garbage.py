"""A request leaves no reference cycle behind in the server: everything the server made for it
is freed by reference counting when it is over.

Cycles (a request's body channel and cycle pointing at each other, llhttp's parser holding its
owner's bound methods) are collected eventually, but only by the cyclic garbage collector, whose
passes over them cost several per cent of a small request's CPU -- more on a worker that closes
every connection.  The app (garbage_apps.py) keeps whatever the collector finds and reports the
server's own objects among it.
"""

from __future__ import annotations

import http.client
import json

import pytest

from .harness import Launcher, UnixHTTPConnection
from .test_master import ALL_CLASSES, FAST


def garbage(path: str) -> dict[str, int]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", "/garbage")
        reply = conn.getresponse()
        assert reply.status == 200
        return dict(json.loads(reply.read()))
    finally:
        conn.close()


def exercise(path: str) -> None:
    """Small requests as clients send them: keep-alive, one per connection, with a body."""
    conn: http.client.HTTPConnection = UnixHTTPConnection(path)
    try:
        for index in range(20):
            conn.request("POST" if index % 2 else "GET", "/", body=b"x" * index if index else None)
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"ok")
    finally:
        conn.close()
    for _ in range(20):
        conn = UnixHTTPConnection(path)
        try:
            conn.request("POST", "/", body=b"data")
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"ok")
        finally:
            conn.close()


@pytest.mark.parametrize("options", ALL_CLASSES)
def test_requests_leave_no_cyclic_garbage(launcher: Launcher, options: list[str]) -> None:
    app = "garbage_apps:asgi_app" if "asgi" in options else "garbage_apps:app"
    server = launcher.start(*options, *FAST, app=app, workers=1)
    assert server.unix_path is not None
    garbage(server.unix_path)  # what booting left: forgotten
    exercise(server.unix_path)
    assert garbage(server.unix_path) == {}, server.tail()
