"""Open WebSockets across the worker's life: graceful reload (HUP: close 1012) and shutdown (TERM:
close 1001) within the graceful timeout while ordinary requests keep succeeding; recycling after
--max-requests (a WebSocket counts as a request; 1012); and a WebSocket held longer than
--timeout does not get its worker killed by the heartbeat."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from .conftest import Server, ServerFactory, assert_clean_log
from .wsclient import websockets_connect

GRACEFUL = 5.0


def wait_closed(ws: ClientConnection, timeout: float) -> tuple[int | None, float]:
    """Block until the server closes ``ws``; (close code, seconds waited)."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=timeout)  # the holder never sends: only the close ends this
    return ws.close_code, time.monotonic() - started


@contextmanager
def http_traffic(server: Server) -> Iterator[dict[str, list[object]]]:
    """Plain HTTP requests on fresh connections, one after another, for as long as the block
    runs; yields the outcomes (every one must be a 200)."""
    outcomes: dict[str, list[object]] = {"ok": [], "failed": []}
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                response = server.get("/hello?delay=0.05", timeout=10)
                (outcomes["ok"] if response.status == 200 else outcomes["failed"]).append(response.status)
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                if not stop.is_set():
                    outcomes["failed"].append(repr(exc))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        thread.join(15)


def test_reload_sends_1012_and_http_keeps_working(make_server: ServerFactory, worker_class: str) -> None:
    server = make_server("--graceful-timeout", str(GRACEFUL), worker_class=worker_class)
    old_pid = server.worker_pids()
    sockets = [websockets_connect(server.address, "/native/hold") for _ in range(2)]
    with http_traffic(server) as outcomes:
        time.sleep(0.3)
        server.process.send_signal(signal.SIGHUP)
        for ws in sockets:
            code, waited = wait_closed(ws, GRACEFUL + 2)
            assert code == 1012 and ws.close_reason == "service restart"
            assert waited < GRACEFUL
        server.process.wait_for_log(r"worker \d+ booted", count=2)
        time.sleep(0.5)
    assert outcomes["failed"] == [] and len(outcomes["ok"]) >= 3, outcomes
    server.process.wait_for_log(f"worker {old_pid[0]} exited", timeout=GRACEFUL + 2)
    new_pids = server.worker_pids()
    assert new_pids and new_pids != old_pid
    # The new generation serves WebSockets.
    with websockets_connect(server.address, "/native/echo") as ws:
        ws.send("after reload")
        assert ws.recv(timeout=5) == "after reload"
    assert_clean_log(server.log())


def test_shutdown_sends_1001_within_the_graceful_timeout(make_server: ServerFactory,
                                                          worker_class: str) -> None:
    server = make_server("--graceful-timeout", str(GRACEFUL), worker_class=worker_class)
    sockets = [websockets_connect(server.address, "/native/hold"),
               websockets_connect(server.address, "/native/echo")]
    result: dict[str, object] = {}
    slow = threading.Thread(target=lambda: result.update(r=server.get("/hello?delay=1")))
    slow.start()
    time.sleep(0.3)  # the slow request is in flight
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for ws in sockets:
        code, _ = wait_closed(ws, GRACEFUL + 2)
        assert code == 1001 and ws.close_reason == "going away"
    assert server.process.proc is not None
    assert server.process.proc.wait(GRACEFUL + 5) == 0
    assert time.monotonic() - started < GRACEFUL
    slow.join(5)
    assert getattr(result.get("r"), "status", None) == 200  # the in-flight request finished
    log = server.log()
    assert "sent close 1001 to 2 WebSockets" in log
    assert_clean_log(log)


def test_max_requests_counts_websockets_and_recycles_with_1012(make_server: ServerFactory,
                                                               worker_class: str) -> None:
    server = make_server("--max-requests", "3", "--graceful-timeout", str(GRACEFUL),
                         worker_class=worker_class)
    old_pid = server.worker_pids()
    ws1 = websockets_connect(server.address, "/native/hold")     # request 1
    ws2 = websockets_connect(server.address, "/native/echo")     # request 2
    ws2.send("x")
    assert ws2.recv(timeout=5) == "x"
    assert server.get("/hello").status == 200                      # request 3: time to retire
    for ws in (ws1, ws2):
        code, waited = wait_closed(ws, GRACEFUL + 2)
        assert code == 1012 and waited < GRACEFUL
    server.process.wait_for_log(r"retired: served 3 requests", timeout=GRACEFUL + 2)
    server.process.wait_for_log(r"worker \d+ booted", count=2)
    assert server.worker_pids() != old_pid
    assert server.get("/hello").status == 200


def test_websocket_held_past_the_timeout_does_not_trip_the_heartbeat(
        make_server: ServerFactory, worker_class: str) -> None:
    # Every thread holds a WebSocket for 2.5 x --timeout; pings (answered by the clients) run
    # meanwhile.  The worker must be neither killed nor reported silent.
    server = make_server("--timeout", "2", "--websocket-ping-interval", "1",
                         worker_class=worker_class, threads=2)
    pids = server.worker_pids()
    assert len(pids) == 1
    sockets = [websockets_connect(server.address, "/native/echo") for _ in range(2)]
    try:
        for ws in sockets:
            ws.send("first")
            assert ws.recv(timeout=5) == "first"
        time.sleep(5)
        assert server.worker_pids() == pids
        for ws in sockets:
            ws.send("still here")
            assert ws.recv(timeout=5) == "still here"
    finally:
        for ws in sockets:
            ws.close()
    assert server.get("/pid").body.decode() == str(pids[0])
    log = server.log()
    assert "silent" not in log and "timeout" not in log.lower().replace("--timeout", ""), log
    assert_clean_log(log)
