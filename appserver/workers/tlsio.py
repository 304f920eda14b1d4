"""TLS on a pump connection: the handshake and reads that must not wait.

Design notes
------------
The pump's connections are wrapped without a handshake (:func:`appserver.tls.wrap`); the first
``handle()`` completes it here, so a client that stalls its handshake is bounded by the head's
deadline (``--header-timeout``) like a slow request head:

* ``nonblocking`` (sync, gthread: heads are gathered in epoll): one attempt with the socket's
  timeout at 0; "wants to read" returns False and the caller waits in epoll for the client's
  next bytes.  "Wants to write" (a full send buffer; rare) finishes blocking, up to the deadline.
* blocking (gevent, eventlet: a greenlet per connection): one call with the remaining time.

A TLS socket with a timeout polls inside ``recv`` for up to that timeout, so the epoll-driven
head reads go through :func:`recv_nowait` (timeout 0 for the call: "wants to read" becomes
BlockingIOError).  ``ssl`` is imported inside the functions: only with TLS on, and after a
green class has patched it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


class HandshakeFailed(Exception):
    """The handshake failed or timed out; ``level``: how loud to log it."""

    def __init__(self, message: str, level: int) -> None:
        super().__init__(message)
        self.level = level


def handshake(sock: ssl.SSLSocket, *, nonblocking: bool, deadline: float,
              io_timeout: float) -> bool:
    """Advance the handshake: True once complete, False while the client has more to send
    (``nonblocking`` only).  HandshakeFailed otherwise.  The socket's timeout is ``io_timeout``
    again afterwards."""
    import ssl

    try:
        if nonblocking:
            sock.settimeout(0.0)
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return False
            except ssl.SSLWantWriteError:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                sock.do_handshake()
        else:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.do_handshake()
    except TimeoutError:
        raise HandshakeFailed("not complete within the header timeout", logging.DEBUG) from None
    except ssl.SSLError as exc:
        # A client that hung up is routine; anything else (a plain-HTTP client, a refused
        # client certificate, no common cipher) is worth an info line, as gunicorn's.
        eof = isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError)
        raise HandshakeFailed(f"failed: {getattr(exc, 'reason', None) or exc}",
                              logging.DEBUG if eof else logging.INFO) from None
    except OSError as exc:
        raise HandshakeFailed(f"ended: {exc!r}", logging.DEBUG) from None
    finally:
        try:
            sock.settimeout(io_timeout)
        except OSError:
            pass
    return True


def recv_nowait(sock: ssl.SSLSocket, size: int, io_timeout: float) -> bytes:
    """What TLS has decrypted or can decrypt now; BlockingIOError when it needs more bytes."""
    import ssl

    sock.settimeout(0.0)
    try:
        return sock.recv(size)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        raise BlockingIOError from None
    finally:
        sock.settimeout(io_timeout)
