"""Request bodies the app did not read: drained to keep the connection, or a lingering close.

A response may go out before the app has read its request's body (an early 403, an app that
ignores uploads).  Then either the rest of the body is read and dropped, so that the next request
can be parsed -- only when the rest is known to be small (``DRAIN_LIMIT``): the response head is
built with ``Connection: close`` otherwise (:func:`can_keep_alive`), because closing a connection
whose response promised keep-alive fails the client's next request -- or the connection closes.

Lingering close (RFC 9112 §9.6): how a connection ends while its client may still be sending.

Closing a socket with unread bytes in its receive queue makes the kernel answer with a reset,
which can destroy the response still on its way, and a client whose next write meets the closed
socket fails (``BrokenPipeError``) before it ever reads the answer: an app that answers a
403/413 without reading the upload, or a sync worker that closes after every response while the
client (``http.client``) sends the body in a second write.  So before closing such a connection
the server half-closes it (the response is complete, with FIN after it) and reads and discards
what the client still sends until it closes its side.

Bounded by time, not by bytes: ``LINGER_IDLE`` seconds of silence, ``LINGER_TIME`` in all; a
client that keeps sending cannot hold a worker longer (nginx: ``lingering_timeout`` 5 s and
``lingering_time`` 30 s; a sync worker's whole process waits here, so ours are shorter).  The
blocking worker classes run :func:`linger`; the loop classes do the same with the loop's timers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from ..http.events import RequestHead

DRAIN_LIMIT = 256 * 1024  # unread body we are willing to discard to keep a connection alive
LINGER_IDLE = 1.0   # seconds of silence that end a lingering close
LINGER_TIME = 5.0   # the longest a lingering close lasts
RECV_SIZE = 256 * 1024


def can_keep_alive(head: RequestHead, consumed: int, complete: bool) -> bool:
    """When the response head is built: may the connection stay open, given that the app has
    read ``consumed`` bytes of the body (all of it: ``complete``)?  Only when the rest can be
    drained: its length is known (not chunked) and at most DRAIN_LIMIT."""
    if complete or not head.has_body:
        return True
    if head.chunked:
        return False
    return (head.content_length or 0) - consumed <= DRAIN_LIMIT


def linger(sock: socket.socket, beat: Callable[[], None] | None = None) -> None:
    """Half-close ``sock``, then read and discard until the peer closes, falls silent for
    ``LINGER_IDLE`` or ``LINGER_TIME`` has passed.  Never raises; the caller closes ``sock``."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return  # already reset or closed by the peer: nothing to protect
    deadline = time.monotonic() + LINGER_TIME
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(min(LINGER_IDLE, remaining))
            if not sock.recv(RECV_SIZE):
                return
            if beat is not None:
                beat()
    except OSError:  # the timeout (TimeoutError) included
        return
