"""Listening sockets: TCP, unix (mode, group, stale-file check) and inherited descriptors.

The master binds every address once, before forking; workers inherit the sockets.  A USR2
upgrade passes the descriptors to the new master in ``APPSERVER_FDS`` so that the listening
sockets are never closed and no connection is refused while the binary changes.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat
from collections.abc import Iterable

from .binds import BindAddress

FDS_ENV = "APPSERVER_FDS"


class BindError(Exception):
    """An address cannot be listened on; the message says which and why."""


class Listener:
    """One bound, listening socket and what the connection code needs to know about it."""

    def __init__(self, sock: socket.socket, address: BindAddress) -> None:
        self.sock = sock
        self.address = address
        self.is_unix = sock.family == socket.AF_UNIX
        self.local = sock.getsockname()
        self._inode = _inode(address.path) if self.is_unix and address.kind == "unix" else None
        self.created = False  # this process created its socket file (not inherited)

    def fileno(self) -> int:
        return self.sock.fileno()

    def __str__(self) -> str:
        if self.is_unix:
            return f"unix:{self.local}"
        host, port = self.local[0], self.local[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self, unlink: bool) -> None:
        """Close; with ``unlink``, remove our socket file (only if it is still ours)."""
        self.sock.close()
        if unlink and self._inode is not None and _inode(self.address.path) == self._inode:
            try:
                os.unlink(self.address.path)
            except OSError:
                pass


def discard(listeners: Iterable[Listener]) -> None:
    """Undo a start that failed: close the listeners and remove the socket files this process
    created (never an inherited one: the master that passed it may still be serving on it)."""
    for listener in listeners:
        listener.close(unlink=listener.created)


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def inherited_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """Sockets passed by the master we replace (USR2)."""
    value = (environ if environ is not None else os.environ).get(FDS_ENV, "")
    socks = []
    for item in value.split(","):
        if item.strip().isdigit():
            socks.append(socket.socket(fileno=int(item)))
    return socks


def _same_address(sock: socket.socket, address: BindAddress) -> bool:
    name = sock.getsockname()
    if address.kind == "unix":
        return sock.family == socket.AF_UNIX and name == address.path
    if address.kind != "tcp" or sock.family == socket.AF_UNIX:
        return False
    if address.port == 0 or name[1] != address.port:
        return False
    try:
        wanted = {info[4][0] for info in socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)}
    except OSError:
        return False
    return name[0] in wanted


def bind_all(addresses: Iterable[BindAddress], *, backlog: int, socket_mode: int,
             socket_group: str | None, inherited: list[socket.socket] | None = None,
             reuse_port: bool = False) -> list[Listener]:
    """Bind every address, reusing inherited sockets; on any failure close what was opened."""
    pool = list(inherited or [])
    listeners: list[Listener] = []
    try:
        for address in addresses:
            match = next((s for s in pool if _same_address(s, address)), None)
            if match is not None:
                pool.remove(match)
                listeners.append(Listener(match, address))
                continue
            listeners.append(bind(address, backlog=backlog, socket_mode=socket_mode,
                                  socket_group=socket_group, reuse_port=reuse_port))
    except BaseException:
        discard(listeners)
        raise
    for leftover in pool:  # inherited but no longer configured
        leftover.close()
    return listeners


def bind(address: BindAddress, *, backlog: int, socket_mode: int,
         socket_group: str | None, reuse_port: bool = False) -> Listener:
    if address.kind == "fd":
        return _from_fd(address)
    if address.kind == "unix":
        return _bind_unix(address, backlog, socket_mode, socket_group)
    return _bind_tcp(address, backlog, reuse_port)


def _bind_tcp(address: BindAddress, backlog: int, reuse_port: bool = False) -> Listener:
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"{address}: cannot resolve {address.host!r}: {exc.strerror}") from None
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # gunicorn's --reuse-port: other processes may bind the same port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BindError(f"{address}: address already in use (another server listens there); "
                            f"stop that server, or bind another port") from None
        raise BindError(f"{address}: cannot listen: {exc.strerror}") from None
    sock.set_inheritable(True)
    return Listener(sock, address)


def _bind_unix(address: BindAddress, backlog: int, mode: int, group: str | None) -> Listener:
    path = address.path
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BindError(f"{address}: directory {directory} does not exist; create it "
                        f"(mkdir -p {directory}) or bind a socket elsewhere")
    _remove_stale_socket(address)
    gid = _group_id(address, group) if group is not None else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Create the file with the right mode from the first moment (no window where it is wider).
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise BindError(f"{address}: cannot bind: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    try:
        os.chmod(path, mode)
        if gid is not None:
            os.chown(path, -1, gid)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        os.unlink(path)
        raise BindError(f"{address}: cannot set up the socket: {exc.strerror}") from None
    sock.set_inheritable(True)
    listener = Listener(sock, address)
    listener.created = True
    return listener


def _remove_stale_socket(address: BindAddress) -> None:
    """Replace a socket file left by a crashed run; never one on which a server listens."""
    path = address.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"{address}: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: nobody listens
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise BindError(f"{address}: cannot check the existing socket: {exc.strerror}") from None
    else:
        raise BindError(f"{address}: a server is already listening on {path}; refusing to steal "
                        f"it (stop that server first, or bind another path)")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _group_id(address: BindAddress, group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BindError(f"{address}: --socket-group {group!r}: no such group") from None


def _from_fd(address: BindAddress) -> Listener:
    try:
        sock = socket.socket(fileno=address.fd)
    except OSError as exc:
        raise BindError(f"{address}: not a usable socket: {exc.strerror}") from None
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise BindError(f"{address}: the socket is not listening")
    sock.set_inheritable(True)
    return Listener(sock, address)
