"""``Broadcast``: publish to a room, subscribe to it; picks and starts the backend lazily.

Design notes
------------
A ``Broadcast`` is cheap to create at import time (a module global of the app) and connects
nothing until first used: ``publish`` or ``subscribe`` start the backend in the process that
calls them, and start it again in a process forked since (the pid is compared on every use).
So the master of a pre-fork server never holds a Redis connection a worker would share, with or
without --preload, and each worker has exactly one subscription connection.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping

from .backends import Backend, MemoryBackend
from .hub import AsyncSubscription, Hub, Subscription

URL_VARIABLES = ("APPSERVER_REDIS_URL", "REDIS_URL")
DEFAULT_QUEUE = 256


class Broadcast:
    """Rooms shared by every process that uses the same backend (one process with the
    in-process backend; every worker and every host with Redis)."""

    def __init__(self, backend: Backend | None = None, *, queue_size: int = DEFAULT_QUEUE) -> None:
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._hub = Hub()

    @classmethod
    def from_url(cls, url: str | None, *, prefix: str = "appserver:broadcast:",
                 queue_size: int = DEFAULT_QUEUE) -> Broadcast:
        """Redis at ``url`` (redis://, rediss://, unix://), or in-process when ``url`` is empty."""
        if not url:
            return cls(queue_size=queue_size)
        from .redis_backend import RedisBackend  # redis-py only when asked for
        return cls(RedisBackend(url, prefix), queue_size=queue_size)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ, **options: object) -> Broadcast:
        """Redis at APPSERVER_REDIS_URL (the bundle sets it: empty when [redis] is off), or at
        REDIS_URL when APPSERVER_REDIS_URL is absent; in-process when the URL is empty."""
        # APPSERVER_REDIS_URL, even empty (the bundle's "off"), wins over REDIS_URL.
        url = next((environ[name] for name in URL_VARIABLES if name in environ), None)
        return cls.from_url(url, **options)  # type: ignore[arg-type]

    @property
    def connected(self) -> bool:
        """Whether messages from other processes arrive now (always True in-process)."""
        return self._started().connected

    def _started(self) -> Hub:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    # A fresh hub: subscriptions and threads of the parent did not survive fork.
                    self._hub = Hub()
                    self.backend.start(self._hub)
                    self._pid = pid
        return self._hub

    def publish(self, room: str, data: str) -> int:
        """Send ``data`` to everyone subscribed to ``room``, this process included.  Returns the
        backend's count of receivers.  Raises PublishError when it cannot be sent."""
        self._started()
        return self.backend.publish(room, data)

    async def publish_async(self, room: str, data: str) -> int:
        """``publish`` for asyncio code: the network round trip runs in the default executor."""
        self._started()
        if isinstance(self.backend, MemoryBackend):
            return self.backend.publish(room, data)
        return await asyncio.get_running_loop().run_in_executor(
            None, self.backend.publish, room, data)

    def subscribe(self, room: str, queue_size: int | None = None) -> Subscription:
        """A subscription for blocking code; it gets what is published from now on."""
        hub = self._started()
        sub = Subscription(hub, room, queue_size or self.queue_size)
        hub.add(sub)
        return sub

    def subscribe_async(self, room: str, queue_size: int | None = None) -> AsyncSubscription:
        """A subscription for the running event loop; it gets what is published from now on."""
        hub = self._started()
        sub = AsyncSubscription(hub, room, queue_size or self.queue_size)
        hub.add(sub)
        return sub

    def subscribers(self, room: str) -> int:
        """How many subscriptions of ``room`` this process has."""
        return self._started().count(room)

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self.backend.stop()
            self._pid = None
