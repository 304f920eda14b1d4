"""appserver.heartbeat: the map a worker beats into and the master reads, across processes."""

from __future__ import annotations

import os
import time

from appserver.heartbeat import STOP_RESTART, Heartbeat


def test_values_round_trip() -> None:
    beat = Heartbeat(None)
    try:
        assert not beat.booted
        beat.beat_at(123.5)
        assert beat.last_beat() == 123.5
        beat.mark_booted()
        assert beat.booted and beat.last_beat() > 123.5
        beat.set_requests(2**40 + 7)
        assert beat.requests() == 2**40 + 7
        beat.set_stop_reason(STOP_RESTART)
        assert beat.stop_reason() == STOP_RESTART
        assert beat.last_beat() > 123.5  # the other fields leave the beat alone
    finally:
        beat.close()


def test_a_reader_never_sees_a_half_written_beat() -> None:
    """A worker process beats as fast as it can while this process reads: every read must be a
    whole value.  (struct.pack_into zero-fills a field before writing it; the master then read
    0.0 in about 7% of reads and aborted a healthy worker for a silence that never happened.)"""
    beat = Heartbeat(None)
    beat.beat_at(1000.0)
    pid = os.fork()
    if pid == 0:  # the worker: beat for about a second, then leave without cleanup
        try:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                for _ in range(1000):
                    beat.beat_at(1000.0)
        finally:
            os._exit(0)
    try:
        bad = 0
        reads = 0
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            for _ in range(1000):
                if beat.last_beat() != 1000.0:
                    bad += 1
            reads += 1000
    finally:
        os.waitpid(pid, 0)
        beat.close()
    assert reads > 10_000
    assert bad == 0, f"{bad} of {reads} reads saw a half-written beat"
