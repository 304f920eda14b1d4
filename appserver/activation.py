"""Socket activation: listening sockets passed by systemd (``LISTEN_FDS``), as gunicorn takes them.

sd_listen_fds(3): the service manager passes ``LISTEN_FDS`` descriptors starting at 3, with
``LISTEN_PID`` naming the process they are meant for (a child that inherited the variables must
not take them) and, optionally, ``LISTEN_FDNAMES`` (the socket units' FileDescriptorName=, ``:``
separated).  The contract is gunicorn 27's: when the variables are set for this process, the
inherited sockets *are* the listening addresses and ``bind`` is not used (gunicorn ignores every
address that is not an fd); we say so in a warning when ``bind`` names something else, and keep
the inherited sockets across HUP reloads whatever the new ``bind`` says.

The variables are removed from the environment as they are taken, so workers and anything they
start never take them again.  A USR2 upgrade passes the sockets on the same way
(:func:`environ_for_new_master`): ``LISTEN_PID`` then names the new master, whose descriptors
keep their numbers across fork and exec.

The socket file of a unix socket belongs to the socket unit: the master never unlinks it (the
listeners are "fd" addresses, which :meth:`appserver.sockets.Listener.close` leaves alone), so a
restart of the service leaves it in place and the kernel queues connections meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

from .binds import BindAddress
from .sockets import BindError, Listener, _same_address

log = logging.getLogger("appserver.master")

LISTEN_FDS_START = 3
LISTEN_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def take_listen_fds(environ: MutableMapping[str, str] | None = None,
                    pid: int | None = None) -> list[tuple[int, str]]:
    """The descriptors passed to this process, with their names; [] without socket activation.
    The variables are removed whether or not they were meant for us (a child must never see them
    with a LISTEN_PID that its parent's exit could make match again)."""
    env = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    raw = {key: env.pop(key) for key in LISTEN_VARS if key in env}
    count, owner = raw.get("LISTEN_FDS", ""), raw.get("LISTEN_PID", "")
    if not count:
        return []
    if owner != str(pid):
        log.warning("LISTEN_FDS=%s is set, but LISTEN_PID=%s is not this process (%d): the "
                    "sockets were passed to another process; not taking them", count,
                    owner or "(unset)", pid)
        return []
    if not count.isdigit() or int(count) == 0:
        raise BindError(f"LISTEN_FDS={count!r}: not a positive number of descriptors")
    fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))
    names = raw.get("LISTEN_FDNAMES", "").split(":") if raw.get("LISTEN_FDNAMES") else []
    if names and len(names) != len(fds):
        log.warning("LISTEN_FDNAMES names %d sockets, LISTEN_FDS passes %d; names ignored",
                    len(names), len(fds))
        names = []
    return [(fd, names[i] if names else "") for i, fd in enumerate(fds)]


def inherited_listeners(passed: list[tuple[int, str]], bind: list[BindAddress]) -> list[Listener]:
    """Listeners over the passed descriptors (each must be a listening stream socket); logs what
    was inherited, and warns when ``bind`` names other addresses (it is not used)."""
    listeners: list[Listener] = []
    for fd, name in passed:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise BindError(f"socket activation: descriptor {fd} (LISTEN_FDS) is not a socket: "
                            f"{exc.strerror}") from None
        if sock.type != socket.SOCK_STREAM \
                or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()  # not ours to close
            raise BindError(f"socket activation: descriptor {fd} is not a listening stream "
                            f"socket; use ListenStream= in the .socket unit (Accept=no)")
        sock.set_inheritable(True)  # the workers accept on it
        listener = Listener(sock, BindAddress("fd", fd=fd))
        log.info("socket activation: listening on %s (descriptor %d%s), inherited from the "
                 "service manager", listener, fd, f", {name}" if name else "")
        listeners.append(listener)
    warn_if_bind_differs(listeners, bind)
    return listeners


def warn_if_bind_differs(listeners: list[Listener], bind: list[BindAddress]) -> None:
    unmatched = [str(a) for a in bind
                 if a.kind != "fd" and not any(_same_address(li.sock, a) for li in listeners)]
    if unmatched:
        log.warning("bind = %s is not used: the server listens on the sockets the service "
                    "manager passed (%s), as gunicorn does under socket activation; make bind "
                    "name them (the .socket unit's ListenStream=) to silence this", unmatched,
                    ", ".join(str(li) for li in listeners))


def environ_for_new_master(listeners: list[Listener], pid: int) -> dict[str, str] | None:
    """LISTEN_* for a new master (USR2) with pid ``pid``, or None when the listeners are not
    exactly the descriptors 3.. (then APPSERVER_FDS passes them, and ``bind`` must match)."""
    fds = [listener.fileno() for listener in listeners]
    if fds != list(range(LISTEN_FDS_START, LISTEN_FDS_START + len(fds))):
        return None
    return {"LISTEN_FDS": str(len(fds)), "LISTEN_PID": str(pid)}
