"""The C recorder (``_fastrecord``, the compiled build's) against the Python one (the reference,
and the pure build's): the same calls must leave the same bytes in the shared counters."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import appserver
from appserver.metrics.recorder import Recorder
from appserver.metrics.shm import BUCKETS, CURRENT_START, PATH_BYTES, WorkerCounters


class EnvironView(Mapping[str, Any]):
    """A mapping that is not a dict, as a framework's environ view may be."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_the_build_picks_its_recorder() -> None:
    counters = WorkerCounters(None)
    try:
        recorder = Recorder(counters)
        # The compiled build must not fall back to the Python stores unnoticed.
        expected = "c" if appserver.BUILD == "compiled" else "python"
        assert recorder.implementation == expected
        recorder.release()
    finally:
        counters.close()


def _twins() -> tuple[WorkerCounters, Recorder, WorkerCounters, Recorder]:
    if appserver.BUILD != "compiled":
        pytest.skip("the pure build has only the Python recorder")
    c_counters, py_counters = WorkerCounters(None), WorkerCounters(None)
    return c_counters, Recorder(c_counters), py_counters, Recorder(py_counters, fast=False)


def _same(c_counters: WorkerCounters, py_counters: WorkerCounters) -> None:
    c_bytes, py_bytes = bytearray(c_counters.raw), bytearray(py_counters.raw)
    start = slice(CURRENT_START * 8, CURRENT_START * 8 + 8)  # a clock reading: compared apart
    assert bool(c_counters.floats[CURRENT_START]) == bool(py_counters.floats[CURRENT_START])
    c_bytes[start] = py_bytes[start] = b"\0" * 8
    assert c_bytes == py_bytes


def _close(*objects: WorkerCounters | Recorder) -> None:
    for obj in objects:
        if isinstance(obj, Recorder):
            obj.release()
    for obj in objects:
        if isinstance(obj, WorkerCounters):
            obj.close()


STATUSES = ["200 OK", "204 No Content", "301 Moved", "404 Not Found", "503 Busy", "101 Switching",
            None, "", "999 Odd", "abc", "0 zero"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW", "get", None]
DURATIONS = [0.0, 1e-6, *BUCKETS, *(b * 1.0001 for b in BUCKETS), 61.0, 3600.0]


def test_every_status_method_and_bucket_edge() -> None:
    c_counters, c, py_counters, py = _twins()
    try:
        for method in METHODS:
            for target in (b"/", b"/a/b?c=d", b"/x" * 100, b"x" * PATH_BYTES, None):
                c.begin(method, target)
                py.begin(method, target)
                _same(c_counters, py_counters)
        for status in STATUSES:
            for duration in DURATIONS:
                for method in METHODS:
                    if method is None:
                        continue
                    c.done(method, status, 5, 17, duration)
                    py.done(method, status, 5, 17, duration)
                    environ = {"REQUEST_METHOD": method, "CONTENT_LENGTH": "12"}
                    c.done_environ(environ, status, 3, duration)
                    py.done_environ(environ, status, 3, duration)
        for environ in ({}, {"CONTENT_LENGTH": ""}, {"REQUEST_METHOD": "GET"},
                        EnvironView({"REQUEST_METHOD": "PUT", "CONTENT_LENGTH": "7"})):
            c.done_environ(environ, "200 OK", 0, 0.01)
            py.done_environ(environ, "200 OK", 0, 0.01)
        _same(c_counters, py_counters)
    finally:
        _close(c, py, c_counters, py_counters)


def test_bad_values_fail_alike() -> None:
    c_counters, c, py_counters, py = _twins()
    try:
        for recorder in (c, py):
            with pytest.raises(ValueError):
                recorder.done_environ({"CONTENT_LENGTH": "twelve"}, "200 OK", 0, 0.1)
        _same(c_counters, py_counters)
    finally:
        _close(c, py, c_counters, py_counters)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(METHODS[:-1]), st.sampled_from(STATUSES),
                          st.integers(0, 1 << 40), st.integers(0, 1 << 40),
                          st.floats(0, 1e4, allow_nan=False)), max_size=30))
def test_any_sequence_of_requests(requests: list[tuple[str, str | None, int, int, float]]) -> None:
    c_counters, c, py_counters, py = _twins()
    try:
        for method, status, request_bytes, response_bytes, duration in requests:
            c.begin(method, b"/p")
            py.begin(method, b"/p")
            c.done(method, status, request_bytes, response_bytes, duration)
            py.done(method, status, request_bytes, response_bytes, duration)
        _same(c_counters, py_counters)
    finally:
        _close(c, py, c_counters, py_counters)
