"""Cross-checks of the systemd target (:mod:`appserver.bundle.systemd`): settings that are each
valid but would fail once the units run.  Called from :func:`appserver.bundle.crosscheck.
cross_check`; every line names the file, both keys and their values, and a fix.
"""

from __future__ import annotations

import posixpath

from appserver.bundle.loading import Loaded
from appserver.bundle.plan import NGINX_USER
from appserver.bundle.systemd import ALWAYS_WRITABLE, STOP_MARGIN, Units, systemd_plan

# Seconds TimeoutStopSec= must leave past graceful_timeout: the master needs a moment after its
# last worker has exited (the same margin as compose's stop_grace_period).
STOP_MARGIN_MIN = 2
# ProtectHome=yes makes these invisible to the service.
HIDDEN_HOMES = ("/home", "/root", "/run/user")


def _under(path: str, directory: str) -> bool:
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def systemd_problems(loaded: Loaded) -> list[str]:
    plan, units = systemd_plan(loaded)
    f = loaded.path
    server = plan.server
    out = []
    graceful = server.graceful_timeout
    if units.timeout_stop_sec < graceful + STOP_MARGIN_MIN:
        out.append(
            f"{f}: systemd.timeout_stop_sec = {units.timeout_stop_sec} leaves no time for "
            f"server.graceful_timeout = {graceful}: `systemctl stop` would SIGKILL the server "
            f"while requests are still finishing; set systemd.timeout_stop_sec to at least "
            f"{graceful + STOP_MARGIN_MIN} (or leave it unset: graceful_timeout + {STOP_MARGIN}) "
            f"or lower server.graceful_timeout")
    if server.daemon:
        out.append(f"{f}: server.daemon = true: under systemd (Type=notify) the server must stay "
                   f"in the foreground, systemd follows the process it started; remove "
                   f"server.daemon")
    out += _hidden(loaded, units) + _writable(loaded, units) + _socket_access(loaded, units)
    return out


def _hidden(loaded: Loaded, units: Units) -> list[str]:
    """ProtectHome=yes hides /home, /root and /run/user from the service."""
    sd = loaded.settings.systemd
    out = []
    for key, value in (("systemd.project_dir", sd.project_dir), ("systemd.venv", sd.venv)):
        home = next((h for h in HIDDEN_HOMES if _under(value, h)), None)
        if home:
            out.append(f"{loaded.path}: {key} = {value!r} is under {home}, which the service "
                       f"cannot see (ProtectHome=yes in appserver.service); install it "
                       f"elsewhere, e.g. under /srv or /opt")
    return out


def _writable(loaded: Loaded, units: Units) -> list[str]:
    """Files the server writes must be in a writable place (ProtectSystem=strict)."""
    server = loaded.settings.server
    writable = [*ALWAYS_WRITABLE, *units.read_write_paths]
    out = []
    for key in ("errorlog", "accesslog", "worker_tmp_dir", "control_socket"):
        if key not in loaded.explicit_server_keys:
            continue
        value = getattr(server, key)
        if not value or value == "-" or not value.startswith("/"):
            continue
        if not any(_under(value, place) for place in writable):
            out.append(
                f"{loaded.path}: server.{key} = {value!r} is not writable by the service "
                f"(ProtectSystem=strict; writable: {', '.join(writable)}); add its directory "
                f"to systemd.read_write_paths = {loaded.settings.systemd.read_write_paths}, or "
                f"log to the journal with \"-\"")
    return out


def _socket_access(loaded: Loaded, units: Units) -> list[str]:
    """nginx's workers (systemd.nginx_user) must be able to connect (write) to the socket,
    owned by systemd.user with group socket_group, by name: the ids are the host's.  With nginx's
    user www-data, the Docker target's check (crosscheck._socket) already judged the same mode and
    group: one line per problem."""
    sd = loaded.settings.systemd
    if sd.nginx_user == NGINX_USER:
        return []
    mode = int(units.socket_mode, 8)
    if sd.nginx_user == units.socket_user:
        ok, bit = bool(mode & 0o200), "owner"
    elif sd.nginx_user == units.socket_group:
        ok, bit = bool(mode & 0o020), "group"
    else:
        # Another group: whether nginx's user is in it is the host's business; only "other" is
        # sure to let it in.
        ok, bit = bool(mode & 0o002), "others"
    if ok:
        return []
    return [f"{loaded.path}: server.socket_mode = \"{units.socket_mode}\" gives the {bit} no "
            f"write permission, so nginx's workers (systemd.nginx_user = {sd.nginx_user!r}) "
            f"cannot connect to the socket owned by systemd.user = {units.socket_user!r}, group "
            f"{units.socket_group!r}: every request would get a 502; set server.socket_group to the "
            f"group of nginx's workers with socket_mode = \"0660\""]
