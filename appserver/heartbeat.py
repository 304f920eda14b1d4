"""Worker heartbeats through a small shared memory map, one per worker.

Design notes
------------
gunicorn proves a worker alive by changing an unlinked temp file's metadata (a syscall per beat)
and reading it back with ``fstat``; on a disk-backed temp dir in Docker that stalls and gets
healthy workers killed (gunicorn #1194, #2215).  We keep the file (in ``--worker-tmp-dir``,
``/dev/shm`` by default) but map it into memory: the master creates and unlinks it before the fork,
the worker writes a CLOCK_MONOTONIC timestamp into it with a plain memory store (no syscall), and
the master reads it.  CLOCK_MONOTONIC is shared by every process on the host, so the two clocks
agree.

Every value is written and read with one aligned 8-byte store or load, through memoryviews of the
map (``struct.pack_into`` first zero-fills the field and then writes it: a master reading in
between saw 0.0 as the last beat -- about 7% of reads during a stream of beats -- and aborted a
healthy worker as "silent").

Layout (native byte order): ``[0:8]`` last beat (float seconds), ``[8:16]`` the moment the worker
finished booting (0 until then), ``[16:24]`` requests served, ``[24]`` why the master is stopping
the worker (set before it sends TERM; the worker tells its WebSocket clients: 1001 or 1012),
``[25]`` why the worker retires itself (set by the worker: the master's restart reason).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time

_SIZE = 32
STOP_SHUTDOWN, STOP_RESTART = 1, 2
_LAST_BEAT, _BOOTED, _REQUESTS = 0, 1, 2  # 8-byte slots
_STOP_REASON = 24                         # a byte
_RETIRING = 25                            # a byte
RETIRE_MAX_REQUESTS, RETIRE_MEMORY = 1, 2


def shared_map(prefix: str, size: int, directory: str | None) -> mmap.mmap:
    """``size`` zeroed bytes shared with the children forked after this call: a file in
    ``directory`` (``--worker-tmp-dir``), unlinked at once and mapped (the metrics counters
    use it too)."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        os.unlink(path)
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


class Heartbeat:
    def __init__(self, directory: str | None) -> None:
        self._map = shared_map("appserver-hb-", _SIZE, directory)
        self._floats = memoryview(self._map).cast("d")
        self._counts = memoryview(self._map).cast("Q")
        self.beat()

    def beat(self) -> None:
        self._floats[_LAST_BEAT] = time.monotonic()

    def beat_at(self, moment: float) -> None:
        """Record ``moment`` (a time.monotonic() value) as the last sign of life."""
        self._floats[_LAST_BEAT] = moment

    def last_beat(self) -> float:
        return float(self._floats[_LAST_BEAT])

    def mark_booted(self) -> None:
        now = time.monotonic()
        self._floats[_LAST_BEAT] = now
        self._floats[_BOOTED] = now

    @property
    def booted(self) -> bool:
        return float(self._floats[_BOOTED]) > 0

    def set_requests(self, count: int) -> None:
        self._counts[_REQUESTS] = count

    def requests(self) -> int:
        return int(self._counts[_REQUESTS])

    def set_stop_reason(self, reason: int) -> None:
        self._map[_STOP_REASON] = reason

    def stop_reason(self) -> int:
        return self._map[_STOP_REASON]

    def set_retiring(self, reason: int) -> None:
        """The worker retires itself (RETIRE_MAX_REQUESTS, RETIRE_MEMORY)."""
        self._map[_RETIRING] = reason

    def retiring(self) -> str:
        """Why the worker retired itself: "max_requests", "memory" or ""."""
        return {RETIRE_MAX_REQUESTS: "max_requests", RETIRE_MEMORY: "memory"}.get(
            self._map[_RETIRING], "")

    def close(self) -> None:
        try:
            self._floats.release()
            self._counts.release()
            self._map.close()
        except (BufferError, ValueError):
            pass
