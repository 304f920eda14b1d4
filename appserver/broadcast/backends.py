"""What a broadcast backend does, and the in-process one.

A backend carries messages between processes: ``publish`` sends one to a room (raising
:class:`PublishError` when it cannot), and once ``start`` ran it hands what any process
published to ``hub.deliver`` and reports the state of its link with ``hub.link``.  The in-process
backend has no link to lose: it delivers straight to this process's hub, so a room spans one
worker process only.
"""

from __future__ import annotations

from typing import Protocol

from .hub import Hub


class PublishError(RuntimeError):
    """A message could not be handed to the other processes (Redis is unreachable, say).  It
    was not delivered to anyone -- the publisher decides whether to retry or to tell its user."""


class Backend(Protocol):
    name: str

    def start(self, hub: Hub) -> None:
        """In the worker process (after the fork): connect, and deliver to ``hub`` from now on."""

    def publish(self, room: str, data: str) -> int:
        """Send ``data`` to ``room``; return how many receivers (processes or subscriptions)
        took it.  Raises PublishError."""

    def stop(self) -> None:
        """Disconnect (bounded); idempotent."""


class MemoryBackend:
    """One process: publishing is delivering to this process's own subscriptions."""

    name = "memory"

    def __init__(self) -> None:
        self._hub: Hub | None = None

    def start(self, hub: Hub) -> None:
        self._hub = hub

    def publish(self, room: str, data: str) -> int:
        if self._hub is None:
            raise PublishError("the broadcast backend was not started")
        return self._hub.deliver(room, data)

    def stop(self) -> None:
        self._hub = None
