"""``appserver status`` and ``appserver control``: the client side of the control socket.

Which socket: ``--control unix:PATH``; else, with ``--pid FILE``, the control socket of the
master whose pid the file holds (found through /proc: the listening unix sockets the master
holds and its workers do not, the control socket answering ``status``); else the default path
(:func:`.master.default_control_path`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .control import ACTIONS, ask
from .master import default_control_path
from .status import render

EXIT_UNREACHABLE = 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = sub.add_parser("status", help="show the running master and its workers",
                            description="Ask a running master (through its control socket) "
                            "for its workers, their current requests and recent restarts.")
    _where(status)
    status.add_argument("--json", action="store_true", help="print the data as JSON")
    status.add_argument("--watch", type=float, metavar="SECONDS", default=0,
                        help="print again every SECONDS until interrupted")
    status.set_defaults(func=status_command)
    control = sub.add_parser("control", help="reload, add or remove a worker, or stop, "
                             "through the control socket",
                             description="The actions of HUP, TTIN, TTOU and TERM, without the "
                             "master's pid.")
    control.add_argument("action", choices=list(ACTIONS))
    _where(control)
    control.set_defaults(func=control_command)


def _where(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--control", metavar="unix:PATH",
                       help="the control socket (default: the server's default path)")
    group.add_argument("--pid", metavar="FILE", help="the master's pid file (--pid of serve)")


def socket_path(args: argparse.Namespace) -> str:
    if args.control:
        return str(args.control).removeprefix("unix:").removeprefix("//")
    if args.pid:
        with open(args.pid) as fh:
            pid = int(fh.read().strip())
        found = find_control_socket(pid)
        if found is None:
            raise OSError(f"master {pid} (from {args.pid}) has no control socket that answers")
        return found
    return default_control_path()


def find_control_socket(pid: int) -> str | None:
    """The path of ``pid``'s control socket (see the module notes)."""
    mine, theirs = _socket_inodes(pid), set()
    for child in _children(pid):
        theirs |= _socket_inodes(child)
    paths = []
    try:
        with open(f"/proc/{pid}/net/unix") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; flags 00010000: listening
                if len(fields) >= 8 and int(fields[6]) in mine - theirs \
                        and int(fields[3], 16) & 0x10000:
                    paths.append(fields[7].lstrip("@"))
    except (OSError, ValueError, StopIteration):
        return None
    for path in sorted(paths, key=lambda p: not p.endswith(".ctl")):
        try:
            if ask(path, "status", timeout=2.0).get("ok"):
                return path
        except (OSError, ValueError):
            continue
    return None


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        return []


def _ask(args: argparse.Namespace, command: str) -> dict[str, object] | None:
    try:
        path = socket_path(args)
        reply = ask(path, command)
    except (OSError, ValueError) as exc:
        print(f"appserver: cannot reach the control socket: {exc}", file=sys.stderr)
        return None
    if not reply.get("ok"):
        print(f"appserver: {reply.get('error', 'the master refused')}", file=sys.stderr)
        return None
    return reply


def status_command(args: argparse.Namespace) -> int:
    while True:
        reply = _ask(args, "status")
        if reply is None:
            return EXIT_UNREACHABLE
        reply.pop("ok", None)
        print(json.dumps(reply, indent=2) if args.json else render(reply))
        if not args.watch:
            return 0
        sys.stdout.flush()
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
        print()


def control_command(args: argparse.Namespace) -> int:
    reply = _ask(args, args.action)
    if reply is None:
        return EXIT_UNREACHABLE
    print(f"{args.action}: sent to the master (as {reply.get('signal')})")
    return 0
