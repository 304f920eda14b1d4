"""The metrics on real masters: counts scraped over HTTP (parsed by prometheus_client's own
parser) match what was sent, on the classes where the counting sites differ (the byte pump,
its threaded variant, the ASGI cycle); restarts carry their reasons; totals survive recycling."""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from tests.server.harness import Launcher, free_port, request, wait_for

from .scrape import ENV, Metered, Samples, start, value

FAST = ["--timeout", "2", "--graceful-timeout", "3"]


def _send(metered: Metered, method: str, path: str, body: bytes | None = None) -> tuple[int, int]:
    conn = metered.server.connection()
    try:
        reply = request(conn, path, method=method, body=body)
    finally:
        conn.close()
    return reply.status, len(reply.body)


def _malformed(metered: Metered) -> bytes:
    assert metered.server.unix_path
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(metered.server.unix_path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
        return sock.recv(200)


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.mark.parametrize("kind", ["sync", "gthread", "asgi"])
def test_counts_match_what_was_sent(launcher: Launcher, kind: str) -> None:
    metered = start(launcher, kind, *FAST)
    before = metered.scrape()
    response_bytes = 0
    for _ in range(7):
        response_bytes += _send(metered, "GET", "/")[1]
    for _ in range(3):
        response_bytes += _send(metered, "POST", "/", b"12345")[1]
    for _ in range(2):
        status, size = _send(metered, "GET", "/missing")
        assert status == 404
        response_bytes += size
    status, size = _send(metered, "DELETE", "/boom")
    assert status == 500
    response_bytes += size
    assert _malformed(metered).startswith(b"HTTP/1.1 400")

    def counted() -> Samples | None:
        now = metered.scrape()
        total = _delta(now, before, "appserver_request_duration_seconds_count")
        return now if total >= 13 else None

    after = wait_for(counted, 10, "13 requests counted")
    assert _delta(after, before, "appserver_requests_total", method="GET", status="2xx") == 7
    assert _delta(after, before, "appserver_requests_total", method="POST", status="2xx") == 3
    assert _delta(after, before, "appserver_requests_total", method="GET", status="4xx") == 2
    assert _delta(after, before, "appserver_requests_total", method="DELETE", status="5xx") == 1
    assert _delta(after, before, "appserver_request_duration_seconds_count") == 13
    assert _delta(after, before, "appserver_request_duration_seconds_bucket", le="+Inf") == 13
    assert _delta(after, before, "appserver_request_body_bytes_total") == 15
    assert _delta(after, before, "appserver_response_body_bytes_total") >= response_bytes - 60
    assert _delta(after, before, "appserver_parse_errors_total", status="400") == 1
    assert value(after, "appserver_requests_in_flight") == 0
    assert value(after, "appserver_workers", state="running") == 2
    worker_class = "asgi" if kind == "asgi" else kind
    assert value(after, "appserver_build_info", version=_version(after),
                 worker_class=worker_class) == 1
    assert value(after, "process_resident_memory_bytes") > 0
    assert ("appserver_listen_queue", frozenset(
        {("listener", f"unix:{metered.server.unix_path}")})) in after
    memory = [k for k in after if k[0] == "appserver_worker_memory_bytes"]
    assert len(memory) == 2


def _version(samples: Samples) -> str:
    for name, labels in samples:
        if name == "appserver_build_info":
            return dict(labels)["version"]
    raise AssertionError("no appserver_build_info")


def _wait_restart(metered: Metered, reason: str, count: int = 1, timeout: float = 20) -> Samples:
    def restarted() -> Samples | None:
        now = metered.scrape()
        return now if value(now, "appserver_worker_restarts_total", reason=reason) >= count \
            else None

    result: Samples = wait_for(restarted, timeout, f"{count} restarts for {reason}",
                               details=metered.server.tail)
    return result


def test_sigkill_is_killed_and_totals_survive(launcher: Launcher) -> None:
    metered = start(launcher, "sync", *FAST)
    for _ in range(10):
        _send(metered, "GET", "/")
    wait_for(lambda: value(metered.scrape(), "appserver_requests_total", method="GET",
                           status="2xx") >= 11, 10, "the requests counted")
    before = value(metered.scrape(), "appserver_requests_total", method="GET", status="2xx")
    victims = metered.server.workers()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    after = _wait_restart(metered, "killed", count=2)
    assert value(after, "appserver_requests_total", method="GET", status="2xx") == before
    assert value(after, "appserver_worker_restarts_total", reason="timeout") == 0
    metered.server.wait_workers(2, exclude=victims)


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_a_hanging_request_is_a_timeout(launcher: Launcher, kind: str) -> None:
    metered = start(launcher, kind, *FAST, workers=1)
    thread = threading.Thread(target=lambda: _quiet_send(metered, "/hang"), daemon=True)
    thread.start()
    samples = _wait_restart(metered, "timeout")
    assert value(samples, "appserver_worker_restarts_total", reason="killed") == 0
    thread.join(15)


def _quiet_send(metered: Metered, path: str) -> None:
    try:
        _send(metered, "GET", path)
    except OSError:
        pass


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_max_requests_recycling_keeps_the_totals(launcher: Launcher, kind: str) -> None:
    metered = start(launcher, kind, *FAST, "--max-requests", "5", workers=1)
    before = metered.scrape()
    for _ in range(12):
        _send(metered, "GET", "/")
    after = _wait_restart(metered, "max_requests", count=2)
    wait_for(lambda: _delta(metered.scrape(), before, "appserver_requests_total", method="GET",
                            status="2xx") == 12, 10, "all 12 requests counted")
    assert value(after, "appserver_worker_restarts_total", reason="crashed") == 0


def test_metrics_on_a_unix_socket_and_other_paths(launcher: Launcher) -> None:
    metered = start(launcher, "sync", *FAST, unix_metrics=True)
    assert metered.metrics_path is not None
    assert oct(os.stat(metered.metrics_path).st_mode & 0o777) == "0o660"  # --socket-mode
    status, content_type, text = metered.scrape_text()
    assert status == 200 and content_type.startswith("text/plain")
    assert "appserver_requests_total" in text
    assert metered.scrape_text("/")[0] == 404
    # Not on the app's socket: there /metrics is the app's own path.
    assert _send(metered, "GET", "/metrics") == (200, len(b"/metrics 0\n"))


@pytest.mark.parametrize("kind", ["tornado", "aiohttp"])
def test_counts_on_the_classes_with_their_own_http(launcher: Launcher, kind: str) -> None:
    """tornado and aiohttp parse HTTP themselves: requests still count (at their access-log
    call), the parse errors are theirs."""
    app = "metrics_apps:aiohttp_app()" if kind == "aiohttp" else "metrics_apps:app"
    server = launcher.start("-k", kind, *FAST, "--metrics-bind", f"127.0.0.1:{(port := free_port())}",
                            "--no-control-socket", app=app, env=ENV, workers=1)
    metered = Metered(server, port, None, "")
    before = metered.scrape()
    for _ in range(4):
        _send(metered, "GET", "/")
    _send(metered, "POST", "/missing", b"123")

    def counted() -> Samples | None:
        now = metered.scrape()
        return now if _delta(now, before, "appserver_request_duration_seconds_count") >= 5 \
            else None

    after = wait_for(counted, 10, "5 requests counted")
    assert _delta(after, before, "appserver_requests_total", method="GET", status="2xx") == 4
    assert _delta(after, before, "appserver_requests_total", method="POST", status="4xx") == 1
    assert _delta(after, before, "appserver_request_body_bytes_total") == 3
    assert value(after, "appserver_requests_in_flight") == 0


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_a_request_refused_by_the_environ_checks_ends(launcher: Launcher, kind: str) -> None:
    """Contradictory scheme headers from a trusted proxy: a 400 after the head was accepted.
    It counts as answered (4xx), not as in flight forever."""
    metered = start(launcher, kind, *FAST, workers=1)
    before = metered.scrape()
    assert metered.server.unix_path
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(metered.server.unix_path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
                     b"X-Forwarded-Ssl: off\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 400")
    after = wait_for(lambda: (s := metered.scrape()) and _delta(
        s, before, "appserver_requests_total", method="GET", status="4xx") == 1 and s, 10,
        "the refused request counted")
    assert value(after, "appserver_requests_in_flight") == 0
