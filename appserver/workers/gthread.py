"""The ``gthread`` worker: a pool of ``--threads`` threads, and a selector for idle connections.

Design notes
------------
The main thread owns the selector: it accepts, watches idle keep-alive connections and partly
received request heads, and hands a connection to the pool when its socket turns readable.  A
thread serves every request that is ready on that connection (pipelined ones in order), then gives
the connection back through the ``_done`` deque and a wake-up pipe; only the main thread touches
the selector, so it needs no lock.

* Accepting only while a thread is free lets a busy worker leave new connections in the shared
  backlog for its idle siblings, instead of queueing them behind its own threads.
* A slow client never holds a thread while sending its head: the pump reads what is there and
  returns ``PARTIAL``; the selector waits with the head's deadline (``--header-timeout``).
* Idle keep-alive connections are closed after ``--keep-alive`` seconds.
* Heartbeat: the main loop beats, unless every thread has been inside one request for longer than
  ``--timeout`` -- then the worker is stuck and the master's timeout kill is the right outcome.
* Graceful stop: listeners are dropped; in-flight requests finish (their responses say
  ``Connection: close``); an idle connection is closed once it has been idle for a short while
  (nginx reuses its most recently used upstream connections first, so the long-idle ones are the
  least likely to carry a request at the moment they close).
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from ..sockets import Listener
from .base import Worker, log
from .pump import CLOSED, IDLE, PARTIAL, Connection

_LISTENER = object()
_WAKEUP = object()
_SIGNAL = object()
IDLE_CLOSE_DURING_STOP = 0.5


class ThreadWorker(Worker):
    multithread = True

    def serve(self) -> None:
        config = self.config
        self.threads = config.threads
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="appserver")
        self.selector = selectors.DefaultSelector()
        self._done: deque[tuple[Connection, str]] = deque()
        self._waker_r, self._waker_w = os.pipe()
        os.set_blocking(self._waker_r, False)
        os.set_blocking(self._waker_w, False)
        self._started: dict[int, float] = {}   # thread id -> when its current request began
        self.busy = 0
        self.open = 0
        self.deadlines: dict[Connection, float] = {}
        self.accepting = False
        self.selector.register(self._waker_r, selectors.EVENT_READ, _WAKEUP)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, _SIGNAL)
        for listener in self.listeners:
            listener.sock.setblocking(False)
        try:
            self._loop()
            self._graceful_stop()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- main loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        next_expiry = 0.0
        while self.alive:
            self.tick()
            if not self.alive:
                break
            self._set_accepting(self.busy < self.threads
                                and self.open < self.config.worker_connections)
            for key, _ in self.selector.select(self._timeout()):
                data = key.data
                if data is _LISTENER:
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif data is _WAKEUP:
                    self._drain(self._waker_r)
                elif data is _SIGNAL:
                    self.drain_wakeup()
                else:
                    self._dispatch(data)
            self._collect()
            now = time.monotonic()
            if now >= next_expiry:
                next_expiry = now + 0.25
                self._expire(now)

    def tick(self) -> None:
        super().tick()
        if self._stuck():
            # Undo the beat: the master should see this worker as silent.
            self.heartbeat.beat_at(max(self._started.values()))

    def _stuck(self) -> bool:
        timeout = self.config.timeout
        if not timeout or self.busy < self.threads or len(self._started) < self.threads:
            return False
        return time.monotonic() - max(self._started.values()) > timeout

    def _timeout(self) -> float:
        if not self.deadlines:
            return 1.0
        return max(0.0, min(1.0, min(self.deadlines.values()) - time.monotonic()))

    def _set_accepting(self, accept: bool) -> None:
        if accept == self.accepting:
            return
        self.accepting = accept
        for listener in self.listeners:
            if accept:
                self.selector.register(listener.sock, selectors.EVENT_READ, _LISTENER)
            else:
                self.selector.unregister(listener.sock)

    def _accept(self, sock: socket.socket) -> None:
        listener = next(item for item in self.listeners if item.sock is sock)
        while self.busy < self.threads and self.open < self.config.worker_connections:
            try:
                client, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            self.open += 1
            self._submit(self._connection(client, peer, listener))

    def _connection(self, client: socket.socket, peer: object, listener: Listener) -> Connection:
        client.setblocking(True)
        if not listener.is_unix:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Connection(client, peer, listener.local, listener.is_unix, self.state,
                          nonblocking_head=True)

    def _dispatch(self, conn: Connection) -> None:
        self.selector.unregister(conn.sock)
        self.deadlines.pop(conn, None)
        self._submit(conn)

    def _submit(self, conn: Connection) -> None:
        self.busy += 1
        self.pool.submit(self._run, conn)

    def _run(self, conn: Connection) -> None:
        """In a pool thread: serve what is ready, then hand the connection back."""
        ident = threading.get_ident()
        self._started[ident] = time.monotonic()
        try:
            result = conn.handle()
        except BaseException:  # handle() catches what it expects; never lose a connection
            log.exception("unexpected error serving a connection")
            conn.close()
            result = CLOSED
        finally:
            self._started.pop(ident, None)
        self._done.append((conn, result))
        try:
            os.write(self._waker_w, b"x")
        except BlockingIOError:
            pass  # the main thread has wake-ups pending already

    def _collect(self) -> None:
        done = self._done
        while done:
            conn, result = done.popleft()
            self.busy -= 1
            if result == CLOSED or conn.closed:
                self.open -= 1
            elif result == IDLE and self.state.stopping:
                conn.close()
                self.open -= 1
            else:
                deadline = (conn.head_deadline if result == PARTIAL
                            else time.monotonic() + self.config.keep_alive)
                self.deadlines[conn] = deadline
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _expire(self, now: float) -> None:
        expired = [conn for conn, deadline in self.deadlines.items() if deadline <= now]
        for conn in expired:
            self._forget(conn)

    def _forget(self, conn: Connection) -> None:
        del self.deadlines[conn]
        self.selector.unregister(conn.sock)
        conn.close()
        self.open -= 1

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # ---- graceful stop ----------------------------------------------------------------------

    def _graceful_stop(self) -> None:
        self.state.stopping = True
        self._set_accepting(False)
        deadline = time.monotonic() + self.config.graceful_timeout
        while (self.busy or self.deadlines) and time.monotonic() < deadline:
            self.heartbeat.beat()
            for key, _ in self.selector.select(0.05):
                data = key.data
                if data is _WAKEUP:
                    self._drain(self._waker_r)
                elif data is _SIGNAL:
                    self.drain_wakeup()
                elif isinstance(data, Connection):
                    self._dispatch(data)
            self._collect()
            now = time.monotonic()
            for conn in [c for c in self.deadlines if now - c.idle_since >= IDLE_CLOSE_DURING_STOP]:
                if not _has_data(conn.sock):
                    self._forget(conn)
        if self.busy:
            log.warning("worker %d: %d requests still running after the graceful timeout (%ds)",
                        self.pid, self.busy, self.config.graceful_timeout)
        for conn in list(self.deadlines):
            self._forget(conn)


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
    except OSError:
        return False
