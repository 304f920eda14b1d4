"""gthread under overload: connections that wait in the listen backlog get their turn among the
kept-alive connections already being served, instead of the backlog as a whole getting one turn
per round (see the notes of appserver/workers/gthread.py).

Counted, not timed: one worker, one thread, every request sleeps.  Busy clients keep their
kept-alive connections always ready; then a crowd of new connections arrives at once, each with
one request.  What matters is how many busy requests are served while the crowd waits: about
one round of the busy clients when the crowd joins the queue, about one round per crowd member
when the backlog gets one turn per round.
"""

from __future__ import annotations

import socket
import threading
import time

from .harness import Launcher

BUSY = 6
CROWD = 8
REQUEST = b"GET /slow?t=0.02 HTTP/1.1\r\nHost: t\r\n\r\n"


def _read_response(sock: socket.socket, buffer: bytearray) -> None:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    buffer[:] = rest[length:]


def test_the_backlog_waits_its_turn_not_a_turn_per_round(launcher: Launcher) -> None:
    server = launcher.start("-k", "gthread", "--threads", "1", "--keep-alive", "30",
                            workers=1)
    assert server.unix_path is not None
    served = [0]
    stop = threading.Event()

    def busy() -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(server.unix_path)
            buffer = bytearray()
            while not stop.is_set():
                sock.sendall(REQUEST)
                _read_response(sock, buffer)
                served[0] += 1

    clients = [threading.Thread(target=busy, daemon=True) for _ in range(BUSY)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 30
    while served[0] < 3 * BUSY:  # every busy connection is in the server's rotation
        assert time.monotonic() < deadline, "the busy clients are not being served"
        time.sleep(0.01)

    crowd = [socket.socket(socket.AF_UNIX) for _ in range(CROWD)]
    for sock in crowd:
        sock.settimeout(30)
        sock.connect(server.unix_path)
    before = served[0]
    for sock in crowd:  # all in the backlog (or just accepted) before the thread is free
        sock.sendall(REQUEST)
    for sock in crowd:
        _read_response(sock, bytearray())
        sock.close()
    during = served[0] - before
    stop.set()
    for client in clients:
        client.join(10)

    # Fair: the crowd waits about one round of the busy clients (BUSY), plus the few served
    # while it arrived.  One backlog turn per round: about CROWD rounds (BUSY * CROWD = 48).
    assert during <= 3 * BUSY, (f"{during} busy requests were served while {CROWD} new "
                                f"connections waited: the backlog did not get its turns")
