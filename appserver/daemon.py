"""``--daemon``: detach the server from its terminal, as gunicorn does.

The classic recipe (APUE §13.3): fork and let the parent exit (the launching command returns at
once, and the child is no process group leader), ``setsid()`` (a new session: no controlling
terminal), fork again and let the session leader exit (the daemon can never acquire a terminal
again).  The working directory is kept, as gunicorn keeps it (--chdir is the setting for that),
and so is the umask (--umask sets it for the whole server).  stdin becomes /dev/null; stdout and
stderr too, unless ``enable_stdio_inheritance``: then only those that are a terminal are, and a
file or pipe the launcher redirected them to stays (``appserver serve -D -R ... 2>>err.log``).

It runs before the sockets are bound and the app is preloaded (gunicorn's order), so the pid file
names the daemon and every descriptor is the daemon's own.  A master exec'd by USR2 (it inherits
its sockets) is already detached and does not detach again.
"""

from __future__ import annotations

import os
import sys

from .sockets import FDS_ENV


def detached_already() -> bool:
    """A master exec'd by USR2 (it inherits the sockets) runs where the old one did."""
    return FDS_ENV in os.environ


def daemonize(inherit_stdio: bool) -> None:
    """Continue as a detached grandchild; the calling process and the middle one exit 0."""
    if os.environ.get("NOTIFY_SOCKET"):
        print("appserver: warning: --daemon under systemd (Type=notify): systemd follows the "
              "process it started, which exits now; drop --daemon", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, 0)
        for fd in (1, 2):
            if not inherit_stdio or _is_terminal(fd):
                os.dup2(null, fd)
    finally:
        if null > 2:
            os.close(null)


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
