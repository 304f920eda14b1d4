"""One worker's counters in a small shared memory map, a sibling of its heartbeat's.

Design notes
------------
The master creates the map (an unlinked file in ``--worker-tmp-dir``, mapped MAP_SHARED) before
the fork, exactly as :mod:`appserver.heartbeat` does; the worker writes, the master only reads.
Each value is one aligned 8-byte slot written with one plain store through a memoryview (no
syscall, no lock), so a reading master sees either the old or the new value of a slot, never a
mix of both.  Slots are read one at a time, so a scrape is not an atomic snapshot of a worker:
counters a request bumps may show one request apart for an instant, which Prometheus' rate()
does not notice; none can ever appear to go backwards.

One writer per slot: a worker is one process.  Threads of one worker (gthread, the asyncio
classes' WSGI pool) share its slots; under CPython's GIL an ``view[i] += n`` (a subscript, an
int add and a store on a C memoryview, no Python call between them) is not interrupted by
another thread, because the interpreter only switches threads at its eval-breaker checks (calls
into Python code, backward jumps).  A free-threaded build would need per-thread slots.

The current request (for ``appserver status``) is several slots: the writer clears its start
time first, then writes the method, the path and the start time with one ``pack_into`` whose
last field is the start time; the reader discards what it read when the start time was zero or
changed meanwhile.  It is the newest request begun; the worker does not clear it when the
request ends (a clock read per request saved): the reader shows it only while the worker has a
request in flight.  A worker serving several at once (gthread, asyncio) may then show its newest
request although that one has ended and an older one still runs.

Layout (native byte order, 8-byte slots): see the constants below.
"""

from __future__ import annotations

import struct

from ..heartbeat import shared_map

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other")
METHOD_INDEX = {name: index for index, name in enumerate(METHODS[:-1])}
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PARSE_ERRORS = (400, 413, 414, 431, 501, 505)
# Upper bounds (seconds) of the request duration histogram; +Inf follows.  From 1 ms (a hello
# world is well under it) to 60 s (nginx's default proxy_read_timeout).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0)

# Classes of the joint counter: 1xx..5xx, and "none" (the client left before any response:
# in the histogram, not in appserver_requests_total).
CLASSES = len(STATUS_CLASSES) + 1
BINS = len(BUCKETS) + 1                              # the last is +Inf

BEGUN = 0                                            # requests begun (in flight: minus ended)
DURATION_SUM = BEGUN + 1                             # float seconds
REQUEST_BYTES = DURATION_SUM + 1
RESPONSE_BYTES = REQUEST_BYTES + 1
PARSE = RESPONSE_BYTES + 1                           # [index in PARSE_ERRORS]
WS_OPEN = PARSE + len(PARSE_ERRORS)
WS_RECEIVED = WS_OPEN + 1
WS_SENT = WS_RECEIVED + 1
# The current request: [method index][path, NUL-padded][start], packed by CURRENT in one call.
CURRENT_REQUEST = WS_SENT + 1                        # index in METHODS
CURRENT_PATH = CURRENT_REQUEST + 1                   # PATH_BYTES bytes from here
PATH_BYTES = 96
CURRENT_START = CURRENT_PATH + PATH_BYTES // 8       # float time.monotonic(); 0: none
CURRENT = struct.Struct(f"=Q{PATH_BYTES}sd")         # at CURRENT_REQUEST * 8
# One joint counter per (method, status class, duration bin), so that a request ends with one
# increment: appserver_requests_total and the histogram are its sums, made when scraped.
REQUESTS = CURRENT_START + 1           # [(method * CLASSES + class) * BINS + bin]
SLOTS = REQUESTS + len(METHODS) * CLASSES * BINS
_SIZE = SLOTS * 8

# The counters folded into the master's totals when a worker ends (gauges are not).
COUNTER_SLOTS = (DURATION_SUM, REQUEST_BYTES, RESPONSE_BYTES,
                 *range(PARSE, PARSE + len(PARSE_ERRORS)), WS_RECEIVED, WS_SENT,
                 *range(REQUESTS, SLOTS))
_SMALL_COUNTERS = COUNTER_SLOTS[1:COUNTER_SLOTS.index(REQUESTS)]


class WorkerCounters:
    """The map and its views: ``counts`` (unsigned), ``gauges`` (signed), ``floats``."""

    def __init__(self, directory: str | None) -> None:
        self._map = shared_map("appserver-metrics-", _SIZE, directory)
        self.counts = memoryview(self._map).cast("Q")
        self.gauges = memoryview(self._map).cast("q")
        self.floats = memoryview(self._map).cast("d")
        self.raw = memoryview(self._map)

    def snapshot(self) -> list[float]:
        """Every counter slot of COUNTER_SLOTS, in its order (one load each; the first is the
        float duration sum): for the master's totals."""
        counts = self.counts
        return [float(self.floats[DURATION_SUM]), *(int(counts[i]) for i in _SMALL_COUNTERS),
                *counts[REQUESTS:SLOTS].tolist()]

    def in_flight(self) -> int:
        """Requests begun minus requests ended (the joint counter's sum)."""
        ended = sum(self.counts[REQUESTS:SLOTS].tolist())
        return max(0, int(self.counts[BEGUN]) - ended)

    def websockets_open(self) -> int:
        return max(0, int(self.gauges[WS_OPEN]))

    def current(self) -> tuple[str, str, float] | None:
        """The request in progress (method, path, its start on CLOCK_MONOTONIC), or None; see
        the module notes for the torn-read check."""
        floats = self.floats
        start = float(floats[CURRENT_START])
        if not start or not self.in_flight():
            return None  # (the newest request begun has ended, and no other runs)
        index, raw_path, _ = CURRENT.unpack_from(self.raw, CURRENT_REQUEST * 8)
        method = METHODS[min(index, len(METHODS) - 1)]
        # (A request target holds no NUL: llhttp refuses one, so the padding is all that is.)
        path = raw_path.rstrip(b"\0").decode("latin-1")
        if float(floats[CURRENT_START]) != start:
            return None
        return method, path, start

    def close(self) -> None:
        try:
            for view in (self.counts, self.gauges, self.floats, self.raw):
                view.release()
            self._map.close()
        except (BufferError, ValueError):
            pass
