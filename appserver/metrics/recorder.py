"""The worker's side of the metrics: plain stores into its :class:`~.shm.WorkerCounters`.

Design notes
------------
Every worker class ends a request through one call, :meth:`appserver.logs.AccessLog.log` (the
ASGI fast path, which builds no environ when nothing logs, calls :meth:`Recorder.done` itself),
and begins one through :meth:`appserver.workers.pump.ServingState.count_request`: those two
places count, so a new worker class counts by using them.  Parse errors are counted where the
server makes its own error response (:func:`appserver.http.response.error_response`), WebSocket
messages in the sans-I/O session, open WebSockets in the worker's registry; those modules hold
an observer slot that only this module fills (they import nothing from here).

The cost per request: a request's start is one increment and the current request's few stores;
its end is one increment of a joint (method, status class, duration bin) counter, the duration
sum and the byte counts (see docs/metrics.md for the measured cost).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from time import monotonic
from typing import Any

from ..http import response as http_response
from ..websocket import session as ws_session
from .shm import (
    BEGUN,
    BINS,
    BUCKETS,
    CLASSES,
    CURRENT_PATH,
    CURRENT_REQUEST,
    CURRENT_START,
    DURATION_SUM,
    METHOD_INDEX,
    METHODS,
    PARSE,
    PARSE_ERRORS,
    PATH_BYTES,
    REQUEST_BYTES,
    REQUESTS,
    RESPONSE_BYTES,
    STATUS_CLASSES,
    WS_OPEN,
    WS_RECEIVED,
    WS_SENT,
    WorkerCounters,
)

_OTHER = len(METHODS) - 1
_PARSE_INDEX = {status: PARSE + i for i, status in enumerate(PARSE_ERRORS)}
_PATH_OFFSET = CURRENT_PATH * 8
# The joint counter's slot = base of the method + class offset of the status' first character
# (absent or not 1-5: "none") + the duration's bin.
_METHOD_BASE = {name: REQUESTS + index * CLASSES * BINS for name, index in METHOD_INDEX.items()}
_OTHER_BASE = REQUESTS + _OTHER * CLASSES * BINS
_CLASS_OFFSET = {str(digit): (digit - 1) * BINS for digit in range(1, 6)}
_NONE_OFFSET = len(STATUS_CLASSES) * BINS


class Recorder:
    def __init__(self, counters: WorkerCounters) -> None:
        self.counters = counters
        self._counts = counters.counts
        self._gauges = counters.gauges
        self._floats = counters.floats
        self._raw = counters.raw

    def install(self) -> None:
        """Fill the observer slots of the protocol modules (in the worker, after the fork)."""
        http_response.error_observer = self.parse_error
        ws_session.message_counters = (self._counts, WS_RECEIVED, WS_SENT)

    # ---- per request: the hot path (few operations: every one costs in a cold cache) ---------

    def begin(self, method: str | None, target: bytes | None) -> None:
        self._counts[BEGUN] += 1
        if target is None:
            return
        floats = self._floats
        floats[CURRENT_START] = 0.0  # the reader discards what it reads meanwhile
        path = target[:PATH_BYTES]
        self._counts[CURRENT_REQUEST] = (METHOD_INDEX.get(method, _OTHER) << 8) | len(path)  # type: ignore[arg-type]
        self._raw[_PATH_OFFSET:_PATH_OFFSET + len(path)] = path
        floats[CURRENT_START] = monotonic()

    def done_environ(self, environ: Mapping[str, Any], status: str | None, length: int,
                     duration: float) -> None:
        """The access log's call: :meth:`done` for a request described by its environ."""
        counts = self._counts
        counts[_METHOD_BASE.get(environ.get("REQUEST_METHOD"), _OTHER_BASE)  # type: ignore[arg-type]
               + _CLASS_OFFSET.get(status[:1] if status else "", _NONE_OFFSET)
               + bisect_left(BUCKETS, duration)] += 1
        self._floats[DURATION_SUM] += duration
        counts[RESPONSE_BYTES] += length
        body = environ.get("CONTENT_LENGTH")
        if body:
            counts[REQUEST_BYTES] += int(body)

    def done(self, method: str, status: str | None, request_bytes: int, response_bytes: int,
             duration: float) -> None:
        """The end of a request described by its parts (the ASGI path without an environ)."""
        counts = self._counts
        counts[_METHOD_BASE.get(method, _OTHER_BASE)
               + _CLASS_OFFSET.get(status[:1] if status else "", _NONE_OFFSET)
               + bisect_left(BUCKETS, duration)] += 1
        self._floats[DURATION_SUM] += duration
        counts[RESPONSE_BYTES] += response_bytes
        if request_bytes:
            counts[REQUEST_BYTES] += request_bytes

    # ---- the rest ---------------------------------------------------------------------------

    def parse_error(self, status: int) -> None:
        slot = _PARSE_INDEX.get(status)
        if slot is not None:
            self._counts[slot] += 1

    def websockets_open(self, count: int) -> None:
        self._gauges[WS_OPEN] = count

