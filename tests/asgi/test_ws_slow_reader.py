"""An ASGI WebSocket whose client never reads (tests/asgi/sendasgi.py ``/flood``): the app's
``send()`` waits on the transport's drain at most ``--header-timeout`` without progress, as an
HTTP send does; then the connection is aborted, ``send()`` raises and ``receive()`` gives
``websocket.disconnect`` 1006 -- long before the pings (60 s here) would have ended it."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.server.harness import Launcher, wait_for

from .conftest import ENV

HANDSHAKE = (b"GET /flood?mark={mark} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
             b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_client_that_stops_reading(launcher: Launcher, tmp_path: Path, loop: str,
                                     transport: str) -> None:
    server = launcher.start("-k", "asgi", "--loop", loop, "--header-timeout", "2",
                            "--websocket-ping-interval", "60", "--timeout", "10",
                            "--graceful-timeout", "3", app="sendasgi:app", bind="both",
                            workers=1, env=ENV)
    mark = tmp_path / "flood.json"
    if transport == "unix":
        assert server.unix_path is not None
        sock = socket.socket(socket.AF_UNIX)
        address: str | tuple[str, int] = server.unix_path
    else:
        assert server.port is not None
        sock = socket.socket()
        address = ("127.0.0.1", server.port)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(HANDSHAKE.replace(b"{mark}", str(mark).encode()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)  # byte by byte: nothing past the 101's head is read
        assert head.startswith(b"HTTP/1.1 101"), head
        began = time.monotonic()
        # ... and the client reads nothing more while the app sends.
        wait_for(mark.exists, 15, "the app's send() to end", details=server.tail)
        waited = time.monotonic() - began
    outcome = json.loads(mark.read_text())
    assert outcome["send"] == "ClientDisconnected", outcome
    assert outcome["receive"]["type"] == "websocket.disconnect"
    assert outcome["receive"]["code"] == 1006
    assert 1.5 < waited < 10, waited  # the header timeout (2 s) after the buffers filled
    assert "stopped reading" in server.log()
    assert server.get("/extensions").status == 200  # the worker serves on
