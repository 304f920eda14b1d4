"""The pure parts: restart reasons, the shared-memory layout, the listen queue probes."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

from appserver.metrics import listenq
from appserver.metrics.recorder import Recorder
from appserver.metrics.shm import PATH_BYTES, WorkerCounters
from appserver.metrics.totals import restart_reason
from appserver.policy import Reason


@pytest.mark.parametrize(("reason", "asked", "restart", "retiring", "expected"), [
    (Reason.TIMEOUT_KILL, False, False, "", "timeout"),
    (Reason.EXTERNAL_SIGNAL, False, False, "", "killed"),
    (Reason.APP_LOAD_ERROR, False, False, "", "boot_failed"),
    (Reason.BOOT_ERROR, False, False, "", "boot_failed"),
    (Reason.CRASHED, False, False, "", "crashed"),
    (Reason.STOPPED, False, False, "max_requests", "max_requests"),
    (Reason.STOPPED, False, False, "memory", "memory"),
    (Reason.STOPPED, True, True, "", "reload"),
    (Reason.GRACE_KILL, True, True, "", "reload"),
    (Reason.STOPPED, True, False, "", None),   # a smaller worker count, a graceful stop
    (Reason.STOPPED, False, False, "", "crashed"),
])
def test_restart_reason(reason: Reason, asked: bool, restart: bool, retiring: str,
                        expected: str | None) -> None:
    assert restart_reason(reason, asked_to_stop=asked, stop_for_restart=restart,
                          retiring=retiring) == expected


def test_recorder_and_reader() -> None:
    counters = WorkerCounters(None)
    try:
        recorder = Recorder(counters)
        recorder.begin("PATCH", b"/x" * 100)
        current = counters.current()
        assert current is not None
        assert current[0] == "PATCH" and current[1] == ("/x" * 100)[:PATH_BYTES]
        assert counters.in_flight() == 1
        recorder.done("PATCH", "204 No Content", 3, 0, 0.0)
        assert counters.current() is None and counters.in_flight() == 0
        recorder.begin(None, None)
        recorder.done("BREW", "418 I'm a teapot", 0, 10, 99.0)
        recorder.parse_error(431)
        recorder.parse_error(500)  # not a parse error
        snapshot = counters.snapshot()
        # two requests (one joint slot each), the durations, the bytes, one parse error
        assert sum(snapshot) == pytest.approx(1 + 1 + 99.0 + 3 + 10 + 1)
    finally:
        counters.close()


def test_listen_queue_tcp_and_unix() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
        assert listenq.queue_length(server) == 3
        for client in clients:
            client.close()
    path = os.path.join(tempfile.mkdtemp(prefix="lq-"), "s.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(8)
        assert listenq.queue_length(server) == 0
        clients = []
        for _ in range(2):
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            clients.append(client)
        assert listenq.queue_length(server) == 2
        for client in clients:
            client.close()
    os.unlink(path)
    os.rmdir(os.path.dirname(path))
