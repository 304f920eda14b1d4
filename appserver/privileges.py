"""Workers as another user (gunicorn's ``user``, ``group`` and ``initgroups``).

The master keeps the identity it started with (root, to bind port 80 or a socket in /run); each
worker switches right after the fork, before it loads the app, as gunicorn's workers do: the
group first (``initgroups`` takes the user's supplementary groups too; otherwise they are
cleared), then the user, so the worker cannot switch back.  What a worker must still open as
that user -- the log files, which it reopens on USR1 -- the master hands to the user at start.
The heartbeat and the listening sockets are inherited already open.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """Who the workers run as; None: unchanged."""

    uid: int | None
    gid: int | None
    initgroups: bool = False

    @property
    def changes(self) -> bool:
        return (self.uid is not None and self.uid != os.geteuid()) or \
            (self.gid is not None and self.gid != os.getegid())

    def check(self) -> None:
        """In the master, at start: only root can switch (a clear error now, not a worker that
        dies of PermissionError)."""
        if self.changes and os.geteuid() != 0:
            raise PermissionError(f"--user/--group: only root can run workers as uid {self.uid}, "
                                  f"gid {self.gid}; this server runs as uid {os.geteuid()}")

    def hand_over(self, path: str) -> None:
        """Let the workers' user reopen ``path`` (a log file)."""
        if self.changes:
            try:
                os.chown(path, -1 if self.uid is None else self.uid,
                         -1 if self.gid is None else self.gid)
            except OSError:
                pass  # /dev/null and the like: the user can open them anyway

    def assume(self) -> None:
        """In the worker: become this identity (group, supplementary groups, then user)."""
        if not self.changes:
            return
        gid = os.getegid() if self.gid is None else self.gid
        if self.initgroups and self.uid is not None:
            os.initgroups(pwd.getpwuid(self.uid).pw_name, gid)
        elif os.geteuid() == 0:
            os.setgroups([])
        if gid != os.getegid():
            os.setgid(gid)
        if self.uid is not None and self.uid != os.geteuid():
            os.setuid(self.uid)


def resolve_user(value: object) -> int:
    """A user name or uid (as gunicorn takes it) -> uid; ValueError naming it."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a user name or a uid")
    if isinstance(value, int) or value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"no user named {value!r} on this machine") from None


def resolve_group(value: object) -> int:
    """A group name or gid -> gid; ValueError naming it."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a group name or a gid")
    if isinstance(value, int) or value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValueError(f"no group named {value!r} on this machine") from None
