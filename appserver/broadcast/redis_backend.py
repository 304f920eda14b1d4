"""The Redis backend: one subscription connection per worker process, fanned out locally.

Design notes
------------
* Rooms are Redis channels ``PREFIX + room``.  Each process subscribes once, to the pattern
  ``PREFIX*`` (PSUBSCRIBE), on a connection of its own that a daemon thread reads (a greenlet
  under gevent/eventlet); the thread hands every message to the process's hub.  A WebSocket
  costs Redis nothing, and joining a room needs no round trip.
* Publishing uses a separate client (a connection pool: PUBLISH may come from any thread).  It
  retries once on a broken pooled connection -- the first publish after Redis restarted finds
  one -- and otherwise raises :class:`PublishError`: a message is never dropped silently.
* Reconnection is ours, not redis-py's (the subscriber's client has no retries), so that every
  loss is logged and announced (``hub.link(False)``: subscriptions get a ``lost`` event), and
  every return too, after waits that double from 0.1 s up to ``max_backoff``.  A connection that
  went silent is found by redis-py's health check (a PING after ``health_check_interval``).
* Fork safety: nothing connects before ``start``, which :class:`~appserver.broadcast.Broadcast`
  calls on first use in the process that uses it (a worker, after the fork; never the master,
  even with --preload).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .backends import PublishError
from .hub import Hub

log = logging.getLogger("appserver.broadcast")
MIN_BACKOFF = 0.1
LISTEN_POLL = 1.0       # seconds get_message waits, so that stop() is noticed
CONNECT_TIMEOUT = 2.0


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = (f"{parts.username}:***@" if parts.username else ":***@") + parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc))


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, prefix: str = "appserver:broadcast:", *,
                 max_backoff: float = 5.0, health_check_interval: int = 10,
                 socket_timeout: float = 5.0) -> None:
        self.url, self.prefix = url, prefix
        self.max_backoff = max_backoff
        self._options: dict[str, Any] = {
            "decode_responses": True, "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": socket_timeout, "health_check_interval": health_check_interval}
        self._publisher: redis.Redis | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- publishing ---------------------------------------------------------------------------

    def publish(self, room: str, data: str) -> int:
        """PUBLISH; returns how many processes were subscribed (each fans out locally)."""
        if self._publisher is None:
            raise PublishError("the broadcast backend was not started")
        try:
            return int(self._publisher.publish(self.prefix + room, data))
        except redis.RedisError as exc:
            raise PublishError(f"could not publish to room {room!r}: Redis at "
                               f"{safe_url(self.url)} is unreachable ({exc})") from exc

    # ---- subscribing --------------------------------------------------------------------------

    def start(self, hub: Hub, wait: float = CONNECT_TIMEOUT) -> None:
        """Connect in the background; wait up to ``wait`` s for the subscription to stand."""
        self._stop = threading.Event()
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)
        self._publisher = redis.Redis.from_url(self.url, retry=retry, **self._options)
        hub.connected = False
        up = threading.Event()
        self._thread = threading.Thread(target=self._listen, args=(hub, up), daemon=True,
                                        name="appserver-broadcast")
        self._thread.start()
        up.wait(wait)

    def _listen(self, hub: Hub, up: threading.Event) -> None:
        client = redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), **self._options)
        delay, lost_at, failures = MIN_BACKOFF, time.monotonic(), 0
        while not self._stop.is_set():
            pubsub = client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(self.prefix + "*")
                confirmed = pubsub.get_message(timeout=CONNECT_TIMEOUT)
                if confirmed is None or confirmed["type"] != "psubscribe":
                    raise redis.TimeoutError(f"no answer to PSUBSCRIBE: {confirmed!r}")
                if failures:
                    log.warning("broadcast: reconnected to Redis at %s after %.1f s",
                                safe_url(self.url), time.monotonic() - lost_at)
                else:
                    log.info("broadcast: subscribed to Redis at %s", safe_url(self.url))
                failures, delay = 0, MIN_BACKOFF
                hub.link(True)
                up.set()
                self._pump(pubsub, hub)
            except (redis.RedisError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    break
                if hub.connected or failures == 0:
                    lost_at = time.monotonic()
                    log.warning("broadcast: no connection to Redis at %s (%s); messages "
                                "published meanwhile will not reach this process; reconnecting",
                                safe_url(self.url), exc)
                hub.link(False)
                failures += 1
                self._stop.wait(delay)
                delay = min(self.max_backoff, delay * 2)
            finally:
                try:
                    pubsub.close()
                except (redis.RedisError, OSError):
                    pass
        client.close()

    def _pump(self, pubsub: Any, hub: Hub) -> None:
        skip = len(self.prefix)
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=LISTEN_POLL)
            if message is not None and message["type"] == "pmessage":
                hub.deliver(message["channel"][skip:], message["data"])

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._publisher is not None:
            self._publisher.close()
