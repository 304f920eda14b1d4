"""A WSGI app for tests/server/test_systemd.py (imported by the server under test as ``sdapps``):
it answers with the names of the worker process's environment variables, so a test can see which
of systemd's variables (LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*) reached the app."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

StartResponse = Callable[..., object]


def process_env(environ: dict[str, object], start_response: StartResponse) -> Iterable[bytes]:
    body = json.dumps(sorted(os.environ)).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
