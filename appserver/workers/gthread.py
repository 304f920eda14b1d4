"""The ``gthread`` worker: ``--threads`` threads sharing one epoll set (leader/follower).

Design notes
------------
Every pool thread waits in ``epoll_wait`` on the same epoll set.  Connections are registered
with ``EPOLLONESHOT``: the kernel hands a ready connection to exactly one thread, which serves
every request that is ready on it (pipelined ones in order) and re-arms it.  There is no hand-off
between an acceptor thread and the pool: a request costs epoll_wait, recv, send and one epoll_ctl,
and no thread switch.  (gunicorn's gthread passes every request from its main thread to the pool
and back, with a futex wake and a selector update each way.)

* Accepting only happens in threads that are free (a busy thread is not in epoll_wait), so a busy
  worker leaves new connections in the shared backlog for its siblings.  The listeners are
  registered with ``EPOLLEXCLUSIVE`` so that one connection wakes one worker, not all of them.
* Fairness under overload: the thread that takes a listener event serves one new connection
  and puts the rest of the backlog (up to ``ACCEPT_BATCH``) into the epoll set, where each
  waits its turn behind the connections already ready.  Accepting one at a time, the backlog as
  a whole got one turn per round of the ready list, so a connection that waited there was
  served many times later than one already kept alive (sleep50 through nginx, more clients than
  threads: p99 3.3 s against gunicorn's 1.1 s, at the same throughput).
* Ownership: a connection is in ``_idle`` (with its deadline) while it waits in the epoll set.
  Whoever removes it from ``_idle`` under ``_lock`` owns it -- the thread that got its event, or
  the main thread expiring it -- so a connection is never served and closed at once, and a stale
  event for a reused descriptor is ignored.
* A slow client never holds a thread while sending its head: the pump reads what is there and
  returns ``PARTIAL``; the connection waits in epoll with the head's deadline (``--header-timeout``).
* The main thread beats the heartbeat, expires idle connections and acts on signals.  It stops
  beating when every thread has been inside one request for longer than ``--timeout``: the worker
  is stuck, and the master's timeout kill is the right outcome.
* Graceful stop: listeners leave the epoll set; in-flight requests finish (their responses say
  ``Connection: close``); connections that were in the backlog at that moment are taken from it
  and served too (see below); an idle connection is closed once it has been idle for a short while
  (nginx reuses its most recently used upstream connections first, so the long-idle ones are the
  least likely to carry a request at the moment they close).
* ``EPOLLEXCLUSIVE`` wakes one worker per new connection, and the other workers' epoll sets
  never hear of it.  So a worker that leaves a listener event unserved loses that connection
  until the next one arrives: behind nginx's upstream keep-alive that can be never, and a client
  waited out its timeout after reloads under load (2 requests in 17,000-24,000, about one run in
  twenty).  So when a worker stops, the first thread to notice (a pool thread that gets a
  listener event, or the main thread) takes the listeners out of the epoll set and then takes
  what waits in the backlog -- a wake-up may have come here before they left -- up to
  ``ACCEPT_BATCH``, to serve it with ``Connection: close``.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from ..sockets import Listener
from .base import Worker, log
from .pump import CLOSED, IDLE_CLOSE_DURING_STOP, PARTIAL, Connection, has_data

_CONN_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
# Connections a listener event takes from the backlog beyond the one served at once.
ACCEPT_BATCH = 16


class ThreadWorker(Worker):
    multithread = True
    holds_connections = True

    def serve(self) -> None:
        self.threads = self.config.threads
        self.epoll = select.epoll()
        self._lock = threading.Lock()
        self._conns: dict[int, Connection] = {}      # fd -> open connection
        self._idle: dict[int, float] = {}            # fd -> deadline, while waiting in epoll
        self._started: dict[int, float] = {}         # thread id -> start of its current request
        self._listeners: dict[int, Listener] = {}
        self._running = True
        self._listening = True  # the listeners are in the epoll set (see _stop_listening)
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._listeners[listener.fileno()] = listener
            self.epoll.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        pool = [threading.Thread(target=self._thread_loop, name=f"appserver-{i}", daemon=True)
                for i in range(self.threads)]
        for thread in pool:
            thread.start()
        try:
            self._main_loop()
            self._graceful_stop()
        finally:
            self._running = False
            for thread in pool:
                thread.join(timeout=1.0)
            self.epoll.close()

    # ---- the main thread: heartbeat, signals, expiry ----------------------------------------

    def _main_loop(self) -> None:
        wakeup = select.poll()
        wakeup.register(self.wakeup_r, select.POLLIN)
        while self.alive:
            self.tick()
            if not self.alive:
                break
            if wakeup.poll(250):
                self.drain_wakeup()
            now = time.monotonic()
            self._expire(now)
            if self.state.websockets is not None:
                self.state.websockets.tick(now)

    def tick(self) -> None:
        super().tick()
        long_lived = self.state.long_lived
        started = [t for ident, t in list(self._started.items()) if ident not in long_lived]
        timeout = self.config.timeout
        if timeout and started and len(started) + len(long_lived) >= self.threads \
                and time.monotonic() - max(started) > timeout:
            # Every thread is stuck in a request: let the master see this worker as silent.
            self.heartbeat.beat_at(max(started))

    def _expire(self, now: float) -> None:
        with self._lock:
            expired = [(fd, self._conns[fd]) for fd, deadline in self._idle.items() if deadline <= now]
            for fd, _ in expired:
                del self._idle[fd]
        for fd, conn in expired:
            self._forget(fd, conn)

    def _forget(self, fd: int, conn: Connection) -> None:
        """Drop a connection we own.  By identity: once its socket is closed, the descriptor
        number may already belong to a connection another thread just accepted."""
        with self._lock:
            if self._conns.get(fd) is conn:
                del self._conns[fd]
        if not conn.closed:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass
            conn.close()

    # ---- pool threads -----------------------------------------------------------------------

    def _thread_loop(self) -> None:
        poll = self.epoll.poll
        ident = threading.get_ident()
        while self._running:
            try:
                events = poll(0.5, 1)
            except (OSError, ValueError):  # the epoll set was closed at exit
                return
            for fd, _mask in events:
                listener = self._listeners.get(fd)
                if listener is not None:
                    if self.state.stopping:
                        self._stop_listening()  # (the event stays level-triggered until then)
                    else:
                        self._accept(listener, ident)
                    continue
                with self._lock:
                    owned = self._idle.pop(fd, None) is not None
                    conn = self._conns.get(fd) if owned else None
                if conn is not None:
                    self._serve(conn, ident)

    def _accept(self, listener: Listener, ident: int) -> None:
        """Serve one new connection at once; the rest of the backlog (up to ACCEPT_BATCH) joins
        the epoll set behind the connections already waiting there (see the notes)."""
        first = self._take(listener)
        if first is None:
            return
        self._adopt_backlog(listener)
        self._serve(first, ident)

    def _adopt_backlog(self, listener: Listener) -> None:
        """Put up to ACCEPT_BATCH connections of the backlog into the epoll set, to be served
        in turn: all taken before any can be served, so a client served meanwhile that
        reconnects at once is not taken again (a stopping worker takes the backlog once)."""
        taken = []
        for _ in range(ACCEPT_BATCH):
            conn = self._take(listener)
            if conn is None:
                break
            taken.append(conn)
        for conn in taken:
            fd = conn.sock.fileno()
            with self._lock:
                self._idle[fd] = conn.head_deadline
            self.epoll.register(fd, _CONN_EVENTS)

    def _take(self, listener: Listener) -> Connection | None:
        """The next connection of the backlog, or None (none waiting, or over the limit)."""
        try:
            client, peer = listener.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        if len(self._conns) >= self.config.worker_connections:
            client.close()  # over the limit: nginx retries another connection
            log.warning("worker %d: --worker-connections %d reached; connection refused",
                        self.pid, self.config.worker_connections)
            return None
        if not listener.is_unix:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(client, peer, listener.local, listener.is_unix, self.state,
                          nonblocking_head=True)
        with self._lock:
            self._conns[client.fileno()] = conn
        return conn

    def _serve(self, conn: Connection, ident: int) -> None:
        fd = conn.sock.fileno()
        self._started[ident] = time.monotonic()
        try:
            result = conn.handle()
        except BaseException:  # handle() catches what it expects; never lose a connection
            log.exception("unexpected error serving a connection")
            result = CLOSED
        finally:
            self._started.pop(ident, None)
        # Even when stopping, keep a connection whose response said keep-alive: its client may be
        # sending the next request already; _graceful_stop closes it once it has been idle.
        if result == CLOSED or conn.closed:
            self._forget(fd, conn)
            return
        deadline = conn.head_deadline if result == PARTIAL else time.monotonic() + self.config.keep_alive
        with self._lock:
            self._idle[fd] = deadline
        try:
            self.epoll.modify(fd, _CONN_EVENTS)   # re-arm (EPOLLONESHOT)
        except FileNotFoundError:
            self.epoll.register(fd, _CONN_EVENTS)

    # ---- graceful stop ----------------------------------------------------------------------

    def _stop_listening(self) -> None:
        """Take the listeners out of the epoll set, once, then adopt what waits in their backlog
        (a wake-up for it may have come to this worker only: see the notes)."""
        with self._lock:
            if not self._listening:
                return
            self._listening = False
        for fd in self._listeners:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        for listener in self._listeners.values():
            self._adopt_backlog(listener)

    def _graceful_stop(self) -> None:
        self.state.stopping = True
        self.close_websockets()
        self._stop_listening()
        deadline = time.monotonic() + self.config.graceful_timeout
        while self._conns and time.monotonic() < deadline:
            self.heartbeat.beat()
            now = time.monotonic()
            with self._lock:
                idle_long = [(fd, self._conns[fd]) for fd in self._idle
                             if now - self._conns[fd].idle_since >= IDLE_CLOSE_DURING_STOP
                             and not has_data(self._conns[fd].sock)]
                for fd, _ in idle_long:
                    del self._idle[fd]
            for fd, conn in idle_long:
                self._forget(fd, conn)
            time.sleep(0.05)
        busy = len(self._started)
        if busy:
            log.warning("worker %d: %d requests still running after the graceful timeout (%ds)",
                        self.pid, busy, self.config.graceful_timeout)

