"""The ASGI lifespan protocol on the asyncio worker (spec: asgi lifespan 2.0).

Design notes
------------
* One task runs ``app({"type": "lifespan", ...}, receive, send)`` for the life of the worker;
  ``receive()`` hands it ``lifespan.startup`` and later ``lifespan.shutdown`` from a queue.
* Startup runs before the worker counts as booted: ``lifespan.startup.failed`` (auto and on) or,
  with ``--asgi-lifespan on``, an app that raises or returns before completing startup, is
  :class:`LifespanFailed`: the worker exits with the app-load status, which the master treats as
  fatal (it stops with the message instead of respawning in a loop).  In auto mode an app that
  raises (or returns) before answering does not support lifespan (Django's handler raises on an
  unknown scope type): a log line, and the worker serves on without it.
* ``state``: the dict the app fills during startup; every request scope gets a shallow copy.
* Shutdown: on a graceful stop or reload, after the connections are done, within what is left of
  ``--graceful-timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..asgi import LIFESPAN_ASGI, Message

log = logging.getLogger("appserver.worker")


class LifespanFailed(Exception):
    """Startup failed: the message is the app's (or why it did not complete)."""


class Lifespan:
    def __init__(self, app: Any, mode: str, beat: Callable[[], None]) -> None:
        self.app = app
        self.mode = mode  # "auto" | "on"
        self.beat = beat
        self.state: dict[str, Any] = {}
        self.supported = True
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._answers: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": LIFESPAN_ASGI, "state": self.state}
        try:
            await self.app(scope, self._incoming.get, self._send)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            await self._answers.put({"type": "lifespan.ended"})

    async def _send(self, message: Message) -> None:
        await self._answers.put(message)

    async def _answer(self, timeout: float | None) -> Message:
        """The app's next message (or the end of its task), beating the heartbeat meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self.beat()
            wait = 0.25 if deadline is None else min(0.25, deadline - loop.time())
            if wait <= 0:
                raise TimeoutError
            try:
                return await asyncio.wait_for(self._answers.get(), wait)
            except TimeoutError:
                continue

    async def startup(self) -> None:
        """Raises :class:`LifespanFailed`; returns when the app is ready (or lacks lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._incoming.put({"type": "lifespan.startup"})
        answer = await self._answer(None)
        kind = answer.get("type")
        if kind == "lifespan.startup.complete":
            return
        if kind == "lifespan.startup.failed":
            raise LifespanFailed(str(answer.get("message") or "lifespan.startup.failed"))
        # The task ended (raised or returned) without answering.
        await asyncio.gather(self._task, return_exceptions=True)
        if self.mode == "on":
            raise LifespanFailed(f"the app does not complete lifespan startup "
                                 f"(--asgi-lifespan on): {self._error!r}")
        self.supported = False
        log.info("the app does not support the ASGI lifespan protocol (%s); serving without it",
                 f"it raised {self._error!r}" if self._error else "it returned")
        if self._error is not None:
            log.debug("lifespan error", exc_info=self._error)

    async def shutdown(self, timeout: float) -> None:
        task = self._task
        if not self.supported or task is None or task.done():
            return
        await self._incoming.put({"type": "lifespan.shutdown"})
        try:
            answer = await self._answer(max(timeout, 0.1))
        except TimeoutError:
            log.warning("ASGI lifespan shutdown did not complete within the graceful timeout")
            task.cancel()
            return
        kind = answer.get("type")
        if kind == "lifespan.shutdown.failed":
            log.error("ASGI lifespan shutdown failed: %s", answer.get("message", ""))
        elif kind == "lifespan.ended" and self._error is not None:
            log.error("ASGI lifespan shutdown raised", exc_info=self._error)
        try:
            await asyncio.wait_for(asyncio.shield(task), 1.0)
        except BaseException:  # noqa: BLE001 - the app's own end; logged above
            task.cancel()
