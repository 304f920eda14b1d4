"""StatsD datagrams, compared with gunicorn 27's own StatsD client for the same events."""

from __future__ import annotations

import datetime
import logging
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.instrument.statsd import Statsd as GunicornStatsd

from appserver.binds import parse_statsd_address
from appserver.compat.statsd import StatsdClient, StatsdLogHandler


@pytest.fixture
def receivers() -> Iterator[tuple[socket.socket, socket.socket]]:
    pair = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        pair.append(sock)
    yield pair[0], pair[1]
    for sock in pair:
        sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(65536))
    except TimeoutError:
        return out


def gunicorn_client(port: int, prefix: str, tags: str) -> Any:
    cfg = GunicornConfig()
    cfg.set("statsd_host", f"127.0.0.1:{port}")
    cfg.set("statsd_prefix", prefix)
    cfg.set("dogstatsd_tags", tags)
    return GunicornStatsd(cfg)


@pytest.mark.parametrize(("prefix", "tags"), [("", ""), ("myapp", ""), ("myapp.", "env:prod,team:a"),
                                              ("a.b...", "")])
@pytest.mark.parametrize(("status", "seconds"), [("200 OK", 0.0123456), ("404 Not Found", 1.5),
                                                 ("503 Service Unavailable", 0.0)])
def test_request_datagrams_match_gunicorn(receivers: tuple[socket.socket, socket.socket],
                                          prefix: str, tags: str, status: str,
                                          seconds: float) -> None:
    theirs_rx, ours_rx = receivers
    theirs = gunicorn_client(theirs_rx.getsockname()[1], prefix, tags)
    ours = StatsdClient(f"127.0.0.1:{ours_rx.getsockname()[1]}", prefix, tags)
    resp = SimpleNamespace(status=status, headers=[], sent=0, response_length=0)
    req = SimpleNamespace(headers=[])
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/", "SERVER_PROTOCOL": "HTTP/1.1"}
    theirs.access(resp, req, environ, datetime.timedelta(seconds=seconds))
    ours.request(status, seconds)
    theirs.gauge("gunicorn.workers", 3)
    ours.gauge("gunicorn.workers", 3)
    assert drain(ours_rx) == drain(theirs_rx)


def test_log_records_count_by_level_as_gunicorn_does(receivers: tuple[socket.socket, socket.socket]) -> None:
    theirs_rx, ours_rx = receivers
    theirs = gunicorn_client(theirs_rx.getsockname()[1], "p", "")
    ours = StatsdClient(f"127.0.0.1:{ours_rx.getsockname()[1]}", "p")
    logger = logging.getLogger("test.statsd.levels")
    logger.propagate = False
    logger.addHandler(StatsdLogHandler(ours))
    for method in ("warning", "error", "critical", "info", "debug"):
        getattr(theirs, method)("message")
        getattr(logger, method)("message")
    try:
        raise RuntimeError("x")
    except RuntimeError:
        theirs.exception("failed")
        logger.exception("failed")
    assert drain(ours_rx) == drain(theirs_rx)


def test_unix_datagram_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "statsd.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    try:
        client = StatsdClient(f"unix://{path}")
        client.increment("gunicorn.requests")
        assert drain(rx) == [b"gunicorn.requests:1|c|@1.0"]
    finally:
        rx.close()


def test_nothing_listening_drops_silently(tmp_path: Any) -> None:
    StatsdClient(f"unix://{tmp_path / 'none.sock'}").request("200 OK", 0.1)
    StatsdClient("127.0.0.1:9").request("200 OK", 0.1)  # the discard port: nobody reads


@pytest.mark.parametrize("text", ["localhost", "host:0", "host:99999", "unix://", "host:port"])
def test_bad_addresses_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match="is not|needs a path"):
        parse_statsd_address(text)
