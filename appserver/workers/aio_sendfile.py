"""A local file as ASGI response body on the asyncio worker: the code that
``http.response.pathsend`` and ``http.response.zerocopysend`` share (docs/asgi.md, "Extensions").

Design notes
------------
* :func:`open_regular` opens and stats a path in the loop's default executor: ``open()`` and
  ``fstat()`` of a file on a slow or network disk would otherwise stall every connection of the
  worker.  A request cancelled meanwhile does not leak the descriptor: the file is closed when
  the open finishes.
* :func:`send_file_body` writes ``count`` bytes of an open file, from ``offset``, as body bytes
  of a response whose head is out: inside one chunk when the response is chunked, within the
  room a ``Content-Length`` leaves, counted in the response's ``bytes_sent``.  The bytes go with
  ``loop.sendfile`` (the kernel's ``sendfile``, no copy in the worker) where the loop and the
  transport have it (the default loop on a plain socket); uvloop has no ``loop.sendfile`` and
  TLS cannot use it, so there the file is read in ``CHUNK`` pieces (``os.pread``: the caller's
  buffered file object is not read through) and written with the same flow control as
  ``http.response.body`` (``--header-timeout`` without the buffer draining: the client is
  gone).  Either way the file's position ends after the bytes sent, as ``loop.sendfile``
  leaves it (zerocopysend without an ``offset`` reads from that position).
* A short send (the client left, or the file shrank under us) leaves chunked framing broken,
  so it is never reported as success: ``ClientDisconnected`` when the client went away, a
  ``ResponseError`` otherwise; the connection is then closed by the request's error path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from typing import TYPE_CHECKING, Any, BinaryIO

from ..http.response import ResponseError
from .disconnect import ClientDisconnected

if TYPE_CHECKING:
    from .aio_asgi import ASGICycle

log = logging.getLogger("appserver.worker")

CHUNK = 262144  # bytes per read where the file is copied (uvloop, TLS)


def _open_regular(path: str, what: str) -> tuple[BinaryIO, int]:
    handle = open(path, "rb")  # noqa: SIM115 - returned open; closed on every error below
    try:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ResponseError(f"{what}: {path!r} is not a regular file")
    except BaseException:
        handle.close()
        raise
    return handle, st.st_size


def _close_late(future: asyncio.Future[tuple[BinaryIO, int]]) -> None:
    """The open finished after its request was cancelled: close what it opened."""
    if not future.cancelled() and future.exception() is None:
        future.result()[0].close()


async def open_regular(path: str, what: str) -> tuple[BinaryIO, int]:
    """(the open file, its size) in the loop's default executor; the errors of ``open()``
    (``FileNotFoundError``, ...), or a ``ResponseError`` for what is not a regular file."""
    future = asyncio.get_running_loop().run_in_executor(None, _open_regular, path, what)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_close_late)
        raise


def regular_size(fd: int, what: str) -> int:
    """The size of the regular file open as ``fd`` (fstat of an open descriptor: no path
    lookup, no wait on the disk)."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise ResponseError(f"{what}: the file cannot be read: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ResponseError(f"{what}: the file is not a regular file")
    return st.st_size


async def send_file_body(cycle: ASGICycle, file: Any, offset: int, count: int) -> None:
    """``count`` bytes of ``file`` from ``offset`` as body bytes of ``cycle``'s response, whose
    head is out (see the module notes)."""
    response = cycle.response
    if not response.body_allowed or count <= 0:
        return
    if response.content_length is not None:
        room = response.content_length - response.bytes_sent
        if count > room:
            count = max(room, 0)
            response.keep_alive = False  # as Response.frame: never past the declared length
        if not count:
            return
    if response.chunked:
        cycle._write(b"%x\r\n" % count)
    sent = await send_file(cycle, file, offset, count)
    response.bytes_sent += sent
    if sent < count:
        response.keep_alive = False
        if _gone(cycle):
            raise ClientDisconnected("the client went away during the file")
        raise ResponseError(f"the file ended {count - sent} bytes before the {count} to send")
    if response.chunked:
        cycle._write(b"\r\n")


async def send_file(cycle: ASGICycle, file: Any, offset: int, count: int) -> int:
    """Write the bytes; how many went out (fewer when the connection is gone or the file
    ended early)."""
    protocol = cycle.protocol
    transport = protocol.transport
    if transport is None or protocol.closed or transport.is_closing():
        return 0
    try:
        return await protocol.loop.sendfile(transport, file, offset, count, fallback=False)
    except (NotImplementedError, asyncio.SendfileNotAvailableError, AttributeError, ValueError):
        pass  # uvloop, TLS, a file object without seek() or in text mode: copy below
    except RuntimeError:  # "Transport is closing": the connection is being torn down
        if not transport.is_closing():
            raise
        raise ClientDisconnected("the connection closed during the file") from None
    except OSError as exc:  # the peer reset the connection, or it was closed under us
        log.debug("sendfile to %s failed: %r", protocol.peer_text(), exc)
        raise ClientDisconnected(f"sendfile failed: {exc!r}") from None
    fd = file.fileno()
    sent = 0
    timeout = protocol.worker.config.header_timeout
    try:
        while sent < count:
            if _gone(cycle):
                break
            data = os.pread(fd, min(CHUNK, count - sent), offset + sent)
            if not data:
                break
            cycle._write(data)
            sent += len(data)
            if protocol.writing_paused:
                try:
                    await asyncio.wait_for(protocol.drain(), timeout)
                except TimeoutError:
                    raise ClientDisconnected("the client stopped reading") from None
    finally:
        _set_position(file, fd, offset + sent)
    return sent


def _gone(cycle: ASGICycle) -> bool:
    """The client went away, or the connection is being closed (uvloop reports the closing
    transport a turn of the loop before the connection is lost)."""
    transport = cycle.protocol.transport
    return cycle.disconnected or transport is None or transport.is_closing()


def _set_position(file: Any, fd: int, position: int) -> None:
    seek = getattr(file, "seek", None)
    try:
        if seek is not None:
            seek(position)
        else:
            os.lseek(fd, position, os.SEEK_SET)
    except (OSError, ValueError):  # closed meanwhile by the app: nothing to leave right
        pass


def current_position(file: Any, fd: int) -> int:
    """Where a zerocopysend without ``offset`` reads from: the file's position."""
    tell = getattr(file, "tell", None)
    if tell is not None:
        return int(tell())
    return os.lseek(fd, 0, os.SEEK_CUR)
