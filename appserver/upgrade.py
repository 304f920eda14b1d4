"""USR2: start a new master on the same listening sockets, and the pid file that goes with it.

The sequence, as with nginx and gunicorn:

1. USR2 to the old master: it renames its pid file to ``<pidfile>.oldbin`` and fork-execs a new
   master with the listening descriptors in ``APPSERVER_FDS`` and its own pid in
   ``APPSERVER_PARENT_PID``.  Both sets of workers now accept from the same sockets.
2. WINCH to the old master: its workers finish what they have and exit; the new ones serve.
3. TERM (or QUIT) to the old master: it exits without unlinking the unix socket files, which the
   new master still listens on.

If the new master dies before step 3, the old one renames its pid file back and carries on.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from .activation import environ_for_new_master
from .sockets import FDS_ENV

if TYPE_CHECKING:
    from .arbiter import Arbiter

log = logging.getLogger("appserver.master")
PARENT_ENV = "APPSERVER_PARENT_PID"

# Captured at import, before --chdir changes the working directory.
START_CWD = os.getcwd()


def restart_command() -> list[str]:
    """How this master was started, so the new one runs the same (possibly updated) code."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "-m")):
        return [sys.executable, "-m", "appserver", *argv[1:]]
    return [sys.executable, *argv] if argv[0].endswith(".py") else argv


class Upgrader:
    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.child_pid = 0        # the new master we started
        self.parent_pid = 0       # the old master that started us (while it lives)

    # ---- pid file ---------------------------------------------------------------------------

    @property
    def pidfile(self) -> str | None:
        path = self.arbiter.config.pidfile
        return os.path.join(START_CWD, path) if path else None

    def write_pidfile(self) -> None:
        if not self.pidfile:
            return
        tmp = f"{self.pidfile}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(tmp, self.pidfile)

    def remove_pidfile(self) -> None:
        for path in filter(None, [self.pidfile, self.pidfile and self.pidfile + ".oldbin"]):
            try:
                with open(path) as fh:
                    mine = fh.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(path)
            except (OSError, ValueError):
                pass

    # ---- the upgrade ------------------------------------------------------------------------

    def adopt_parent(self, value: str | None) -> None:
        if value and value.isdigit():
            self.parent_pid = int(value)
            log.info("started by master %d (upgrade); it still owns its workers until it stops",
                     self.parent_pid)

    def child_alive(self) -> bool:
        return self.child_pid > 0 and _alive(self.child_pid)

    def shares_sockets(self) -> bool:
        """Another master listens on our sockets: do not unlink the unix socket files."""
        return self.child_alive() or self.parent_alive()

    def parent_alive(self) -> bool:
        # We are the old master's child: once it has exited we are re-parented (a zombie parent
        # would still answer kill(pid, 0)).
        return self.parent_pid > 0 and os.getppid() == self.parent_pid

    def upgrade(self) -> None:
        if self.child_alive():
            log.warning("USR2 ignored: a new master (%d) is already running", self.child_pid)
            return
        if self.parent_alive():
            log.warning("USR2 ignored: the old master %d is still running; stop it first",
                        self.parent_pid)
            return
        if self.pidfile and os.path.exists(self.pidfile):
            os.replace(self.pidfile, self.pidfile + ".oldbin")
        fds = [listener.fileno() for listener in self.arbiter.listeners]
        command = restart_command()
        pid = os.fork()
        if pid == 0:
            try:
                for fd in fds:
                    os.set_inheritable(fd, True)
                env = dict(os.environ)
                env[FDS_ENV] = ",".join(str(fd) for fd in fds)
                env[PARENT_ENV] = str(self.arbiter.pid)
                # systemd's variables, taken out of the old master's environment at its start:
                # the new master notifies (and takes LISTEN_FDS) under its own pid.
                env.update(self.arbiter.sd.environ_for_new_master(os.getpid()))
                if self.arbiter.socket_activated:
                    env.update(environ_for_new_master(self.arbiter.listeners, os.getpid()) or {})
                os.chdir(START_CWD)
                self.arbiter.hooks.pre_exec(self.arbiter)
                os.execvpe(command[0], command, env)
            except BaseException as exc:
                sys.stderr.write(f"appserver: cannot start the new master: {exc}\n")
            finally:
                os._exit(1)
        self.child_pid = pid
        log.info("upgrade: started new master %d (%s); send WINCH, then TERM, to this master "
                 "(%d) once it serves", pid, " ".join(command), self.arbiter.pid)

    def reaped(self, pid: int, status: int) -> bool:
        """Handle the exit of the new master; True if ``pid`` was it."""
        if pid != self.child_pid:
            return False
        self.child_pid = 0
        log.error("the new master %d exited (status %d); this master carries on", pid, status)
        if self.pidfile and os.path.exists(self.pidfile + ".oldbin"):
            os.replace(self.pidfile + ".oldbin", self.pidfile)
        if self.arbiter.num_workers == 0:
            self.arbiter.num_workers = self.arbiter.config.workers
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
