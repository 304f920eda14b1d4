"""What the reliability scenarios share: the worker classes they run on, and the app each one
serves (``-k asgi`` serves the ASGI twin of every WSGI app: :func:`app_for`)."""

from __future__ import annotations

import os
from typing import Any

# Every class, with the options the suite runs it with (gevent/eventlet/asyncio/tornado hold many
# connections; gthread and sync are pre-fork thread/process servers).
WORKER_CLASSES: dict[str, list[str]] = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "8"],
    "gevent": ["-k", "gevent", "--worker-connections", "1200"],
    "eventlet": ["-k", "eventlet", "--worker-connections", "1200"],
    "asyncio": ["-k", "asyncio", "--threads", "8"],
    "tornado": ["-k", "tornado", "--threads", "8"],
    # The asyncio class with --interface asgi: each request is a task in the loop, so --threads
    # (the WSGI pool) means nothing to it.
    "asgi": ["-k", "asgi"],
}

ASGI_CLASSES = frozenset({"asgi"})

# The ASGI twins the ``MODULE:asgi_CALLABLE`` rule does not name.
ASGI_TWINS = {"tests.behaviour.app:app": "tests.behaviour.asgi_app:app"}


def is_asgi(name: str) -> bool:
    """Whether the class serves ASGI apps (and so the ASGI twin of every app)."""
    return name in ASGI_CLASSES


def app_for(name: str, app: str) -> str:
    """The app spec a class serves for the WSGI app ``app``: the app itself, or on an ASGI class
    its twin with the same routes, answers and faults -- ``MODULE:asgi_CALLABLE`` next to it
    unless :data:`ASGI_TWINS` names another."""
    if not is_asgi(name):
        return app
    if app in ASGI_TWINS:
        return ASGI_TWINS[app]
    module, _, callable_ = app.partition(":")
    return f"{module}:asgi_{callable_}"


def bundle_tables(name: str) -> dict[str, dict[str, Any]]:
    """The class's options as the bundle's settings: ``{"app": {...}, "server": {...}}``.

    ``-k asgi`` is ``app.interface = "asgi"`` (the bundle then runs the asyncio class with
    interface "asgi"); every other flag is the ``[server]`` setting of its name."""
    options = WORKER_CLASSES[name]
    app: dict[str, Any] = {}
    server: dict[str, Any] = {}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if flag == "-k" and is_asgi(value):
            app["interface"] = "asgi"
            continue
        key = "worker_class" if flag == "-k" else flag.removeprefix("--").replace("-", "_")
        server[key] = int(value) if value.isdigit() else value
    return {"app": app, "server": server}


def selected_classes() -> list[str]:
    """The classes to run (``RELIABILITY_WORKER_CLASSES=gthread,gevent`` narrows it)."""
    wanted = os.environ.get("RELIABILITY_WORKER_CLASSES")
    if not wanted:
        return list(WORKER_CLASSES)
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKER_CLASSES]
    if unknown:
        raise ValueError(f"RELIABILITY_WORKER_CLASSES: unknown class(es) {unknown}; "
                         f"known: {', '.join(WORKER_CLASSES)}")
    return names
