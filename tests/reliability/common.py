"""What the reliability scenarios share: the worker classes they run on."""

from __future__ import annotations

import os

# Every class, with the options the suite runs it with (gevent/eventlet/asyncio/tornado hold many
# connections; gthread and sync are pre-fork thread/process servers).
WORKER_CLASSES: dict[str, list[str]] = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "8"],
    "gevent": ["-k", "gevent", "--worker-connections", "1200"],
    "eventlet": ["-k", "eventlet", "--worker-connections", "1200"],
    "asyncio": ["-k", "asyncio", "--threads", "8"],
    "tornado": ["-k", "tornado", "--threads", "8"],
}


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
