"""The ``sync`` worker: one request at a time per process, each response closes its connection.

Design notes
------------
* Request heads are gathered without blocking: an accepted connection is a
  :class:`~.pump.Connection` in ``nonblocking_head`` mode (the gthread path), and while its head
  is incomplete it waits in an epoll set, which hands the worker whatever bytes arrive.  Only a
  connection whose head is complete is served -- blocking, one at a time, then closed.  So a client
  that trickles its head (slowloris) costs a descriptor and a parser, not the worker: 1,000 of them
  do not delay the other clients.  (gunicorn's sync worker reads the head blocking, without a
  timeout of its own: each such client holds a worker until the master's timeout kills it.)
* A head must be complete within ``--header-timeout`` of the accept, or the connection is closed
  without an answer -- after one last read, in case the bytes came while a request was being
  served.  Every deadline is accept time + the same timeout, so the connections, kept in accept
  order, expire oldest first and the epoll timeout is the oldest one's deadline.
* At most ``--worker-connections`` connections wait for their heads per worker.  At that cap (or
  out of descriptors) the listeners leave the epoll set: new connections wait in the kernel
  backlog, for a sibling worker or a free place here, instead of being refused.
* The listeners are registered with ``EPOLLEXCLUSIVE``: one connection wakes one worker.  Every
  turn of the loop and every request beats the heartbeat.  The request body and the response still
  go at the client's pace, holding the worker (nginx buffers both); a read or write without
  progress for ``--header-timeout`` ends them.
* Graceful stop (TERM, --max-requests, memory): accepting stops; connections already accepted are
  served as their heads complete or closed at their deadline, within ``--graceful-timeout``.
  Connections still in the backlog when the listeners leave the epoll set are taken once, up to
  ``ACCEPT_BATCH``, and served: ``EPOLLEXCLUSIVE`` wakes one worker per connection, and if that
  wake-up came to this one, no other worker hears of the connection until the next one arrives.
"""

from __future__ import annotations

import errno
import select
import socket
import time

from ..sockets import Listener
from .base import Worker, log
from .pump import CLOSED, PARTIAL, Connection

ACCEPT_BATCH = 64       # accepts per turn, so that waiting heads are read between bursts
# One-shot: a connection is re-armed after each read, so a descriptor that outlives its
# connection (shared with a child the app forked) can never make the loop spin.
CONN_EVENTS = select.EPOLLIN | select.EPOLLONESHOT
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class SyncWorker(Worker):
    uses_keep_alive = False

    def serve(self) -> None:
        self.epoll = select.epoll()
        self.pending: dict[int, Connection] = {}   # fd -> connection awaiting its head (accept order)
        self._listeners = {listener.fileno(): listener for listener in self.listeners}
        self._listening = False
        self._resume_at = 0.0   # accepting paused until then (out of descriptors)
        self._warned_at = -60.0
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self.epoll.register(self.wakeup_r, select.EPOLLIN)
        beat = self._beat_interval()
        try:
            while self.alive:
                self.tick()
                if not self.alive:
                    break
                now = time.monotonic()
                self._listen(not self.state.stopping and now >= self._resume_at
                             and len(self.pending) < self.config.worker_connections)
                self._turn(min(beat, self._resume_at - now) if now < self._resume_at else beat)
            self._listen(False)
            for listener in self.listeners:  # a wake-up may have come here (see the notes)
                self._accept(listener, last=True)
            stop_at = time.monotonic() + self.config.graceful_timeout
            while self.pending and time.monotonic() < stop_at:
                self.heartbeat.beat()
                self._turn(min(beat, stop_at - time.monotonic()))
        finally:
            for conn in self.pending.values():
                conn.close()
            self.pending.clear()
            self.epoll.close()

    def _turn(self, wait: float) -> None:
        """Wait up to ``wait`` (less if a head's deadline comes first), then act on what is ready."""
        if self.pending:
            oldest = next(iter(self.pending.values()))
            wait = min(wait, oldest.head_deadline - time.monotonic())
        for fd, _ in self.epoll.poll(max(0.0, wait)):
            if fd == self.wakeup_r:
                self.drain_wakeup()
            elif fd in self._listeners:
                self._accept(self._listeners[fd])
            elif (conn := self.pending.get(fd)) is not None:
                self._advance(fd, conn)
        now = time.monotonic()
        while self.pending:
            fd, conn = next(iter(self.pending.items()))
            if conn.head_deadline > now:
                break
            self._advance(fd, conn, last=True)

    def _accept(self, listener: Listener, *, last: bool = False) -> None:
        """Take up to ACCEPT_BATCH connections; ``last``: the backlog once more as we stop --
        all of it before serving any, so a client that reconnects at once is not taken again."""
        taken: list[Connection] = []
        for _ in range(ACCEPT_BATCH):
            if self.state.stopping and not last:
                break
            if len(self.pending) >= self.config.worker_connections:
                self._warn(f"--worker-connections {self.config.worker_connections} reached")
                break
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                self._resume_at = time.monotonic() + 0.5
                self._listen(False)
                self._warn(f"cannot accept: {exc.strerror}")
                break
            if not listener.is_unix:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, peer, listener.local, listener.is_unix, self.state,
                              nonblocking_head=True)
            if last:
                taken.append(conn)
            else:
                self._advance(sock.fileno(), conn)  # the head is often there already
        for conn in taken:
            self._advance(conn.sock.fileno(), conn)

    def _advance(self, fd: int, conn: Connection, *, last: bool = False) -> None:
        """Read what arrived; serve the request once its head is complete.  ``last``: the head's
        deadline has passed, so an incomplete head closes the connection."""
        try:
            result = conn.handle()
        except Exception:  # handle() catches what it expects; never lose the worker
            log.exception("unexpected error serving a connection")
            result = CLOSED
        if result == PARTIAL and not conn.closed and not last:
            if fd in self.pending:
                self.epoll.modify(fd, CONN_EVENTS)
            else:
                self.pending[fd] = conn
                self.epoll.register(fd, CONN_EVENTS)
            return
        # Closing the socket also takes it out of the epoll set.
        self.pending.pop(fd, None)
        conn.close()
        if conn.served:
            self.tick()

    def _listen(self, on: bool) -> None:
        if on == self._listening:
            return
        self._listening = on
        for fd in self._listeners:
            if on:
                self.epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            else:
                self.epoll.unregister(fd)

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning("worker %d: %s with %d connections awaiting their request heads; "
                        "new connections wait in the backlog", self.pid, why, len(self.pending))

    def _beat_interval(self) -> float:
        # Wake often enough to beat well inside the timeout (and to notice signals promptly).
        timeout = self.config.timeout
        return 1.0 if not timeout else max(0.05, min(1.0, timeout / 4))
