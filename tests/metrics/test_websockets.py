"""WebSocket metrics on real masters: open sockets and messages by direction, on the blocking
(gthread, the native API) and the ASGI paths."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from websockets.sync.client import unix_connect

from tests.server.harness import Launcher, wait_for

from .scrape import start, value


@pytest.mark.parametrize("kind", ["gthread", "asgi"])
def test_websocket_counts(launcher: Launcher, kind: str) -> None:
    metered = start(launcher, kind, "--timeout", "10", workers=1)
    path = metered.server.unix_path
    assert path
    before = metered.scrape()
    with ExitStack() as stack:
        clients = [stack.enter_context(unix_connect(path, "ws://localhost/ws", open_timeout=10))
                   for _ in range(2)]
        for client in clients:
            for n in range(3):
                client.send(f"hello {n}")
                assert client.recv(timeout=10) == f"hello {n}"
        samples = wait_for(lambda: (s := metered.scrape())
                           and value(s, "appserver_websockets_open") == 2 and s, 10,
                           "two open WebSockets")
        for direction in ("received", "sent"):
            assert value(samples, "appserver_websocket_messages_total", direction=direction) \
                - value(before, "appserver_websocket_messages_total", direction=direction) == 6
        status = metered.ask("status")
        assert sum(w["websockets_open"] for w in status["workers"]) == 2
    wait_for(lambda: value(metered.scrape(), "appserver_websockets_open") == 0, 10,
             "the WebSockets closed")
