"""Misbehaving WSGI apps for the app-fault table (imported by the server under test as
``fault_apps``, from ``PYTHONPATH``).

``app`` answers ``/`` with ``ok pid=<worker pid>`` and misbehaves on purpose on these paths:

* ``/raise-before``: raises before calling start_response.
* ``/raise-after``: calls start_response, then raises (no byte has been sent yet).
* ``/raise-in-body-first``: returns an iterator that raises before its first chunk.
* ``/raise-in-body-chunked``: no Content-Length; yields a chunk, then raises (the head and a
  chunk are on the wire: only cutting the connection tells the client it is incomplete).
* ``/raise-in-body-length``: announces Content-Length 1000, yields 10 bytes, then raises.
* ``/hang``: blocks forever.  On gevent/eventlet with the *unpatched* ``time.sleep`` (a blocking
  C call, as a driver that is not green-aware makes), which stops the hub; elsewhere with a
  plain sleep in the request's thread.
* ``/leak?mib=N``: keeps N MiB more for the life of the process (every page touched), capped.
* ``/exit?status=N``: ``os._exit(N)`` in the middle of the request.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

StartResponse = Callable[..., object]

LEAK_CAP_MIB = 400  # never keep more than this per process, whatever the test asks
_LEAKED: list[bytearray] = []


class Fault(RuntimeError):
    """What the apps raise: the log must show it."""


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}


def _blocking_sleep() -> Callable[[float], None]:
    """``time.sleep`` as it was before a green worker monkey-patched it."""
    if "gevent" in sys.modules:
        from gevent import monkey  # noqa: PLC0415

        if monkey.is_module_patched("time"):
            return monkey.get_original("time", "sleep")  # type: ignore[no-any-return]
    if "eventlet" in sys.modules:
        from eventlet import patcher  # noqa: PLC0415

        if patcher.is_monkey_patched("time"):
            return patcher.original("time").sleep  # type: ignore[no-any-return]
    return time.sleep


def _ok(start_response: StartResponse, text: str) -> list[bytes]:
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _body_raising(first: bytes | None, message: str) -> Iterator[bytes]:
    if first is not None:
        yield first
    raise Fault(message)


def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
    path = environ["PATH_INFO"]
    query = _query(environ)
    if path == "/raise-before":
        raise Fault("fault: raised before start_response")
    if path == "/raise-after":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise Fault("fault: raised after start_response")
    if path == "/raise-in-body-first":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _body_raising(None, "fault: raised in the body iterator before its first chunk")
    if path == "/raise-in-body-chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _body_raising(b"partial body\n", "fault: raised in the body iterator after a chunk")
    if path == "/raise-in-body-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")])
        return _body_raising(b"0123456789", "fault: raised in the body iterator short of "
                             "Content-Length")
    if path == "/hang":
        sleep = _blocking_sleep()
        while True:
            sleep(3600)
    if path == "/leak":
        mib = int(query.get("mib", "16"))
        for _ in range(mib):
            if len(_LEAKED) >= LEAK_CAP_MIB:
                break
            chunk = bytearray(1 << 20)
            chunk[::4096] = b"x" * 256  # touch every page so it counts as resident
            _LEAKED.append(chunk)
        return _ok(start_response, f"leaked pid={os.getpid()} total={len(_LEAKED)}MiB\n")
    if path == "/exit":
        os._exit(int(query.get("status", "3")))
    return _ok(start_response, f"ok pid={os.getpid()}\n")
