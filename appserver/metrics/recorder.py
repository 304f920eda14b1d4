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
sum and the byte counts (see docs/metrics.md for the measured cost).  The compiled build makes
those stores in C (``_fastrecord``, the same stores as ``_begin``, ``_done`` and
``_done_environ`` here, which are the reference and the pure-Python build's): through
memoryviews they cost about 10,000 instructions per request, in C about 300.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from .. import _build
from ..http import response as http_response
from ..websocket import session as ws_session
from . import shm
from .shm import (
    BEGUN,
    BINS,
    BUCKETS,
    CLASSES,
    CURRENT,
    CURRENT_REQUEST,
    CURRENT_START,
    DURATION_SUM,
    METHOD_INDEX,
    METHODS,
    PARSE,
    PARSE_ERRORS,
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
_CURRENT_OFFSET = CURRENT_REQUEST * 8
_pack_current = CURRENT.pack_into  # method index, path (truncated, NUL-padded), start: last
# The joint counter's slot = base of the method + class offset of the status' first character
# (absent or not 1-5: "none") + the duration's bin.
_METHOD_BASE = {name: REQUESTS + index * CLASSES * BINS for name, index in METHOD_INDEX.items()}
_OTHER_BASE = REQUESTS + _OTHER * CLASSES * BINS
_CLASS_OFFSET = {str(digit): (digit - 1) * BINS for digit in range(1, 6)}
_NONE_OFFSET = len(STATUS_CLASSES) * BINS


def _fast_recorder(counters: WorkerCounters) -> Any:
    """The C recorder over ``counters``, or None in the pure-Python build (or without it)."""
    if _build.BUILD != "compiled":
        return None
    try:
        from ._fastrecord import FastRecorder  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return None
    slots = {name: getattr(shm, name) for name in (
        "BEGUN", "DURATION_SUM", "REQUEST_BYTES", "RESPONSE_BYTES", "CURRENT_REQUEST",
        "CURRENT_PATH", "PATH_BYTES", "CURRENT_START", "REQUESTS", "CLASSES", "BINS")}
    return FastRecorder(counters.raw, slots, METHODS, BUCKETS)


class Recorder:
    """``begin``, ``done`` and ``done_environ`` are the per-request calls (see the notes)."""

    begin: Callable[[str | None, bytes | None], None]
    done: Callable[[str, str | None, int, int, float], None]
    done_environ: Callable[[Mapping[str, Any], str | None, int, float], None]

    def __init__(self, counters: WorkerCounters, *, fast: bool = True) -> None:
        """``fast=False``: the Python stores even where the C ones exist (the tests compare)."""
        self.counters = counters
        self._counts = counters.counts
        self._gauges = counters.gauges
        self._floats = counters.floats
        self._raw = counters.raw
        self._fast = _fast_recorder(counters) if fast else None
        if self._fast is None:
            self.begin, self.done, self.done_environ = self._begin, self._done, self._done_environ
        else:
            c = self._fast
            self.begin, self.done, self.done_environ = c.begin, c.done, c.done_environ

    @property
    def implementation(self) -> str:
        return "python" if self._fast is None else "c"

    def release(self) -> None:
        """Let go of the counters' buffer (before the counters are closed)."""
        if self._fast is not None:
            self._fast.release()

    def install(self) -> None:
        """Fill the observer slots of the protocol modules (in the worker, after the fork)."""
        http_response.error_observer = self.parse_error
        ws_session.message_counters = (self._counts, WS_RECEIVED, WS_SENT)

    # ---- per request: the hot path (few operations: every one costs in a cold cache) ---------

    def _begin(self, method: str | None, target: bytes | None) -> None:
        self._counts[BEGUN] += 1
        if target is None:
            return
        self._floats[CURRENT_START] = 0.0  # the reader discards what it reads meanwhile
        _pack_current(self._raw, _CURRENT_OFFSET, METHOD_INDEX.get(method, _OTHER),  # type: ignore[arg-type]
                      target, monotonic())

    def _done_environ(self, environ: Mapping[str, Any], status: str | None, length: int,
                      duration: float) -> None:
        """The access log's call: :meth:`done` for a request described by its environ."""
        body = environ.get("CONTENT_LENGTH")
        request_bytes = int(body) if body else 0  # (first: a bad value records nothing)
        counts = self._counts
        counts[_METHOD_BASE.get(environ.get("REQUEST_METHOD"), _OTHER_BASE)  # type: ignore[arg-type]
               + _CLASS_OFFSET.get(status[:1] if status else "", _NONE_OFFSET)
               + bisect_left(BUCKETS, duration)] += 1
        self._floats[DURATION_SUM] += duration
        counts[RESPONSE_BYTES] += length
        if request_bytes:
            counts[REQUEST_BYTES] += request_bytes

    def _done(self, method: str, status: str | None, request_bytes: int, response_bytes: int,
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

