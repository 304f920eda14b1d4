"""The systemd target: the values of deploy/systemd/, computed once, and the files rendered.

A plain server runs the app the way gunicorn's deployment docs describe: ``appserver.socket``
holds the unix socket (systemd creates it with the settings' mode, owner and group, and keeps it
open across restarts of the service, so the kernel queues connections meanwhile); the
``Type=notify`` service ``appserver.service`` runs the server, which takes that socket
(LISTEN_FDS) and tells systemd when it serves (sd_notify); nginx on the host proxies to the socket
through a site file for ``sites-available/``.  sysusers.d creates the app user, tmpfiles.d the
runtime directory the socket lives in.

The :class:`~appserver.bundle.plan.Plan` of this target reuses the local plan's derivations
(limits, locations, forwarding) with the host's paths, so the site file prints the same
locations as nginx.conf, and the server config (deploy/systemd/appserver.toml) binds exactly the
socket the .socket unit listens on.  The templates print; they derive nothing.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import jinja2

from appserver.bundle import plan as P
from appserver.bundle.loading import Loaded
from appserver.bundle.settings import SettingsError

DIRECTORY = "deploy/systemd"
SOCKET_UNIT = "appserver.socket"
SERVICE_UNIT = "appserver.service"
FILES = {
    f"{DIRECTORY}/{SOCKET_UNIT}": "systemd/appserver.socket.j2",
    f"{DIRECTORY}/{SERVICE_UNIT}": "systemd/appserver.service.j2",
    f"{DIRECTORY}/appserver-sysusers.conf": "systemd/sysusers.conf.j2",
    f"{DIRECTORY}/appserver-tmpfiles.conf": "systemd/tmpfiles.conf.j2",
    f"{DIRECTORY}/nginx-site.conf": "systemd/nginx-site.conf.j2",
    f"{DIRECTORY}/appserver.toml": "appserver.toml.j2",
}
STOP_MARGIN = 5  # seconds past graceful_timeout before SIGKILL (the derived TimeoutStopSec)
# Writable under ProtectSystem=strict without a ReadWritePaths= entry: the API file systems and
# the private /tmp and /var/tmp of PrivateTmp=.
ALWAYS_WRITABLE = ("/dev/shm", "/tmp", "/var/tmp")
NGINX_LOG_DIR = "/var/log/nginx"


@dataclass(frozen=True)
class Units:
    """What only the unit files print."""

    user: str
    group: str
    socket_user: str
    socket_group: str
    socket_mode: str  # "0660"
    exec_start: str
    working_directory: str
    config_path: str
    runtime_dir: str
    read_write_paths: list[str]
    timeout_stop_sec: int
    watchdog_sec: int
    restart: str
    home: str
    access_log: str | None


def _host_path(loaded: Loaded, relative: str) -> str:
    """A path of the settings (relative to the settings file) where the project is installed."""
    if os.path.isabs(relative):
        return relative
    return posixpath.normpath(posixpath.join(loaded.settings.systemd.project_dir, relative))


def systemd_plan(loaded: Loaded) -> tuple[P.Plan, Units]:
    """The plan of the systemd target, and the units' values."""
    s = loaded.settings
    sd, n = s.systemd, s.nginx
    socket_path = f"{sd.runtime_dir}/{P.SOCKET_NAME}"
    app_dir = _host_path(loaded, s.app.directory)
    explicit = loaded.explicit_server_keys
    socket_group = (s.server.socket_group if "socket_group" in explicit else None) or sd.nginx_user
    # The local target's derivations (loopback metrics, no pid file), on the host's paths.
    table, config = P.server_table(loaded, socket_path=socket_path, app_dir=app_dir,
                                   socket_group=None, target="local")
    # Stated for a start without the .socket unit; the unit's SocketGroup= is the same.
    table["socket_group"] = socket_group
    order = list(type(config).model_fields)
    table = {key: table[key] for key in sorted(table, key=order.index)}
    config = config.model_copy(update={"socket_group": socket_group})
    local = P.local_plan(loaded, Path(sd.runtime_dir))
    tls = n.tls
    http = [str(n.listen_port)] + ([f"[::]:{n.listen_port}"] if n.ipv6 else [])
    https = [str(tls.listen_port)] + ([f"[::]:{tls.listen_port}"] if n.ipv6 else [])
    access_log = f"{NGINX_LOG_DIR}/appserver.access.log" if n.access_log else None
    plan = dataclasses.replace(
        local, target="systemd", socket_dir=sd.runtime_dir, socket_path=socket_path,
        server_config_path=f"{sd.config_dir}/appserver.toml",
        nginx_user=sd.nginx_user, nginx_group=sd.nginx_user,
        pid_path="/run/nginx.pid", temp_dir="/var/lib/nginx",
        error_log=f"{NGINX_LOG_DIR}/appserver.error.log", access_log=access_log,
        http_listens=http, https_listens=https,
        https_redirect_suffix="" if tls.listen_port == 443 else f":{tls.listen_port}",
        static_root=_host_path(loaded, n.static_dir) + "/" if n.static_dir else None,
        tls_certificate=_host_path(loaded, tls.certificate) if tls.enabled else None,
        tls_certificate_key=_host_path(loaded, tls.certificate_key) if tls.enabled else None,
        health_listen=None, server=config, server_table=table,
        public_upstreams=(f"unix:{socket_path}",),
    )
    writable = list(dict.fromkeys([sd.runtime_dir, *sd.read_write_paths]))
    units = Units(
        user=sd.user, group=sd.user, socket_user=sd.user, socket_group=socket_group,
        socket_mode=f"{config.socket_mode:04o}",
        exec_start=f"{sd.venv}/bin/appserver serve --settings {plan.server_config_path}",
        working_directory=app_dir, config_path=plan.server_config_path,
        runtime_dir=sd.runtime_dir, read_write_paths=writable,
        timeout_stop_sec=sd.timeout_stop_sec or config.graceful_timeout + STOP_MARGIN,
        watchdog_sec=sd.watchdog_sec, restart=sd.restart, home=sd.project_dir,
        access_log=access_log)
    return plan, units


def render_systemd(loaded: Loaded, env: jinja2.Environment) -> dict[str, str]:
    """deploy/systemd/*, relative to the output directory (``env``: the bundle's templates)."""
    plan, units = systemd_plan(loaded)
    out = {}
    for name, template in FILES.items():
        try:
            text = env.get_template(template).render(settings=loaded.settings, plan=plan,
                                                     units=units)
        except jinja2.TemplateError as exc:
            raise SettingsError(f"{template}: cannot render: {exc}") from exc
        out[name] = text.rstrip("\n") + "\n"
    return out
