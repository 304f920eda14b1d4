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

Layout (little-endian): ``[0:8]`` last beat (float seconds), ``[8:16]`` the moment the worker
finished booting (0 until then), ``[16:24]`` requests served, ``[24]`` why the master is stopping
the worker (set before it sends TERM; the worker tells its WebSocket clients: 1001 or 1012).
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time

_SIZE = 32
STOP_SHUTDOWN, STOP_RESTART = 1, 2
_F = struct.Struct("<d")
_Q = struct.Struct("<Q")


class Heartbeat:
    def __init__(self, directory: str | None) -> None:
        fd, path = tempfile.mkstemp(prefix="appserver-hb-", dir=directory)
        try:
            os.unlink(path)
            os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.beat()

    def beat(self) -> None:
        _F.pack_into(self._map, 0, time.monotonic())

    def beat_at(self, moment: float) -> None:
        """Record ``moment`` (a time.monotonic() value) as the last sign of life."""
        _F.pack_into(self._map, 0, moment)

    def last_beat(self) -> float:
        return float(_F.unpack_from(self._map, 0)[0])

    def mark_booted(self) -> None:
        now = time.monotonic()
        _F.pack_into(self._map, 0, now)
        _F.pack_into(self._map, 8, now)

    @property
    def booted(self) -> bool:
        return float(_F.unpack_from(self._map, 8)[0]) > 0

    def set_requests(self, count: int) -> None:
        _Q.pack_into(self._map, 16, count)

    def requests(self) -> int:
        return int(_Q.unpack_from(self._map, 16)[0])

    def set_stop_reason(self, reason: int) -> None:
        self._map[24] = reason

    def stop_reason(self) -> int:
        return self._map[24]

    def close(self) -> None:
        try:
            self._map.close()
        except (BufferError, ValueError):
            pass
