"""Values shared by several generated files, computed once for one target.

A target is where the rendered configs run: ``docker`` (two containers sharing the unix socket on a
named volume) or ``local`` (nginx and the server as plain processes, every path under a run
directory).  Templates only print what a :class:`Plan` holds; they derive nothing, so the socket
path that nginx connects to is, by construction, the one the server binds.

Limits that nginx and the server both enforce are derived from one setting: the server accepts
exactly what nginx lets through (``nginx.header_buffer_size`` gives ``limit_request_line`` and
``limit_request_field_size``, ``nginx.client_max_body_size`` gives ``limit_request_body``), and
the server's ``keep_alive`` outlives nginx's upstream ``keepalive_timeout`` so nginx, never the
server, closes an idle upstream connection (no race with a request in flight).  A value set
explicitly in ``[server]`` wins and is then checked by :mod:`appserver.bundle.crosscheck`.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import ValidationError

from appserver.bundle.loading import Loaded, describe_errors
from appserver.bundle.monitoring import MetricsPlan, control_socket, metrics_plan
from appserver.bundle.settings import SettingsError
from appserver.bundle.settings_redis import COMPOSE_URL as REDIS_COMPOSE_URL
from appserver.bundle.values import format_size
from appserver.config import ServerConfig, setting_input

Target = Literal["docker", "local"]
PlanTarget = Literal["docker", "local", "kubernetes", "systemd"]  # kubernetes: the pod's nginx.conf

# ---- Docker facts, chosen here once ------------------------------------------------------------
SOCKET_NAME = "app.sock"
DOCKER_SOCKET_DIR = "/run/appserver"  # the named volume, mounted in both containers
SOCKET_VOLUME = "app-socket"
# Debian's base-passwd gives www-data uid and gid 33 in every Debian image, so the numeric ids
# agree across the two containers without any user management in the nginx image.
NGINX_USER = "www-data"
NGINX_UID = 33
APP_USER = "app"
APP_UID = 10001  # above Debian's dynamic range, so it collides with no packaged user
# Groups that exist in the app image (socket_group must be one of them, by name or id).
DOCKER_GROUPS = {"www-data": 33, "app": APP_UID}
DOCKER_APP_DIR = "/srv/app"
DOCKER_STATIC_DIR = "/srv/static"
DOCKER_SERVER_CONFIG = "/etc/appserver/appserver.toml"
DOCKER_TLS_DIR = "/etc/nginx/tls"
VENV = "/opt/venv"
# A loopback-only server in the nginx container that proxies the app's health path: the compose
# health check of nginx then proves nginx, the socket and the app together.
HEALTH_PORT = 8081
# Environment variables that override the published host ports when compose runs.
HTTP_PORT_ENV = "NGINX_HTTP_PORT"
HTTPS_PORT_ENV = "NGINX_HTTPS_PORT"
PROMETHEUS_PORT_ENV = "PROMETHEUS_PORT"  # the monitoring profile's host port

KEEPALIVE_MARGIN = 5  # seconds the server's keep_alive outlives nginx's upstream keepalive_timeout
STOP_MARGIN = 5  # seconds past graceful_timeout before compose sends SIGKILL (derived default)

# Generated files of the docker target, relative to the output directory.
NGINX_CONF = "nginx/nginx.conf"
NGINX_DOCKERFILE = "nginx/Dockerfile"
APP_DOCKERFILE = "Dockerfile"
COMPOSE_FILE = "compose.yaml"
SERVER_CONFIG = "deploy/appserver.toml"
PROMETHEUS_CONFIG = "deploy/prometheus.yml"
ALERT_RULES = "deploy/alerts.yml"  # beside prometheus.yml, which names it relatively
REDIS_DOCKERFILE = "deploy/redis.Dockerfile"  # the compose redis service's ([redis] mode "local")
# The compose profile "monitoring"'s image: Prometheus and prometheus-nginx-exporter ([metrics]).
MONITORING_DOCKERFILE = "deploy/monitoring.Dockerfile"
# What the app image installs besides app.packages when [redis] is on: appserver[redis]'s
# requirement, so that any project (not only this one, whose extra it is) gets redis-py.
REDIS_REQUIREMENT = "redis>=5"

# Served by nginx for static files; embedded so that no mime.types file has to be found on the
# host (the local stack and an unprivileged `nginx -t` need nothing outside the run directory).
MIME_TYPES = (
    ("text/html", "html htm"), ("text/css", "css"), ("text/plain", "txt"),
    ("text/javascript", "js mjs"), ("application/json", "json map"),
    ("application/xml", "xml"), ("application/manifest+json", "webmanifest"),
    ("image/svg+xml", "svg svgz"), ("image/png", "png"), ("image/jpeg", "jpeg jpg"),
    ("image/gif", "gif"), ("image/webp", "webp"), ("image/avif", "avif"),
    ("image/x-icon", "ico"), ("font/woff", "woff"), ("font/woff2", "woff2"),
    ("application/pdf", "pdf"), ("application/wasm", "wasm"), ("application/zip", "zip"),
    ("text/csv", "csv"), ("video/mp4", "mp4"), ("audio/mpeg", "mp3"),
)


@dataclass(frozen=True)
class ProxyLocation:
    """One nginx location proxied to the app; the prefix "/" is the catch-all ``location /``."""

    prefix: str
    websocket: bool  # passes the Upgrade on, with nginx.websocket_read_timeout
    unbuffered: bool


@dataclass(frozen=True)
class DockerPlan:
    """What only the Dockerfiles and compose.yaml need."""

    context: str  # the build context (the project directory) relative to compose.yaml
    app_dockerfile: str  # relative to the context
    nginx_dockerfile: str
    nginx_conf_src: str
    server_config_src: str
    app_src: str
    static_src: str | None
    pip_args: str  # shell-quoted
    tls_mounts: list[tuple[str, str]]  # (host path relative to compose.yaml or absolute, container)
    stop_grace_period: int
    app_healthcheck: list[str]
    nginx_healthcheck: list[str]
    ports: list[str]  # with ${VAR:-default} for compose to interpolate
    redis_dockerfile: str = ""  # relative to the context
    redis_url: str | None = None  # the app's APPSERVER_REDIS_URL; None: [redis] is off
    monitoring_dockerfile: str = ""  # relative to the context
    prometheus_config_src: str = ""
    alert_rules_src: str = ""
    prometheus_ports: list[str] = field(default_factory=list)  # the monitoring profile's
    prometheus_healthcheck: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    target: PlanTarget
    header: str
    socket_dir: str
    socket_path: str
    server_config_path: str
    # nginx
    nginx_user: str | None
    nginx_group: str | None
    pid_path: str
    temp_dir: str
    error_log: str
    access_log: str | None
    http_listens: list[str]
    https_listens: list[str]
    https_redirect_suffix: str
    static_root: str | None
    tls_certificate: str | None
    tls_certificate_key: str | None
    health_listen: str | None
    header_buffer_size: str
    client_max_body_size: str
    proxy_buffer_size: str
    proxy_buffers: str
    proxy_busy_buffers_size: str
    worker_rlimit_nofile: int
    proxy_locations: list[ProxyLocation]  # the catch-all "/" last
    # the client address nginx believes: $remote_addr (realip, one hop) or $client_addr (a map)
    client_addr: str
    forwarded_for_pattern: str | None  # map regex for trusted_proxy_hops > 1, else None
    forwarded_proto_pattern: str  # map regex: the X-Forwarded-Proto entry at the same hop
    # the server
    server: ServerConfig  # effective: explicit settings + computed values + the server's defaults
    server_table: dict[str, Any]  # what the rendered config states (defaults stay runtime-computed)
    # who owns the socket and who must write to it (for the permission cross-check)
    socket_owner_uid: int
    socket_gid: int | None  # None: socket_group names no group known to the target
    nginx_uid: int
    nginx_gids: frozenset[int]
    docker: DockerPlan | None = None
    # Where the public server block's locations proxy to (the upstreams app and app_websocket).
    public_upstreams: tuple[str, ...] = ()
    metrics: MetricsPlan | None = None  # None: [metrics] is off
    mime_types: tuple[tuple[str, str], ...] = field(default=MIME_TYPES)
    # Kubernetes: the file the pod's preStop hook creates; the health path answers 503 once it
    # exists (readiness turns red before nginx stops).  None elsewhere.
    drain_file: str | None = None


def header_line(loaded: Loaded) -> str:
    return loaded.generated_from  # with --env or overlays, it names them too


def server_table(loaded: Loaded, *, socket_path: str, app_dir: str,
                 socket_group: str | None, target: Target) -> tuple[dict[str, Any], ServerConfig]:
    """The ``[server]`` table: explicit settings plus the computed and derived values."""
    s = loaded.settings
    explicit = loaded.explicit_server_keys
    # Validated again below, with the computed values: in a form that reads back the same.
    values: dict[str, Any] = {key: setting_input(key, getattr(s.server, key)) for key in explicit}
    values["bind"] = [f"unix:{socket_path}"]
    values["wsgi_app"] = s.app.module
    if s.app.interface == "asgi":
        # Only the asyncio class serves ASGI (interface_problems refused any other explicitly
        # set); a WSGI app keeps the server's default interface, unstated.
        values["interface"] = "asgi"
        values.setdefault("worker_class", "asyncio")
    values["chdir"] = app_dir
    values.setdefault("pythonpath", app_dir)
    values.setdefault("limit_request_line", s.nginx.header_buffer_size)
    values.setdefault("limit_request_field_size", s.nginx.header_buffer_size)
    values.setdefault("limit_request_body", s.nginx.client_max_body_size)
    if s.nginx.upstream_keepalive:
        values.setdefault("keep_alive", s.nginx.upstream_keepalive_timeout + KEEPALIVE_MARGIN)
    # Stated even when it is the server's default: nginx's write access depends on it.
    values["socket_mode"] = s.server.socket_mode
    if target == "docker":
        values.setdefault("socket_group", socket_group)
    else:
        # Locally nginx's workers run as the invoking user, who owns the socket; a group such
        # as www-data would only make the server's chown fail for a user outside it.
        values.pop("socket_group", None)
    control = control_socket(loaded, os.path.dirname(socket_path))
    if control:
        values["control_socket"] = control
    metrics = metrics_plan(loaded, target)
    if metrics is not None:
        if "metrics_bind" not in ServerConfig.model_fields:
            raise SettingsError(f"{loaded.path}: metrics.enabled = true needs an app server with "
                                f"the metrics_bind setting (issue 13), which this one lacks; set "
                                f"metrics.enabled = false or upgrade appserver")
        values["metrics_bind"] = metrics.server_bind
    try:
        config = ServerConfig.model_validate(values)
    except ValidationError as exc:
        raise SettingsError("\n".join(describe_errors(exc, {"server": values}, loaded.path))) from None
    order = list(ServerConfig.model_fields)
    table = {key: values[key] for key in sorted(values, key=order.index) if values[key] is not None}
    return table, config


def _limits(loaded: Loaded) -> dict[str, Any]:
    n = loaded.settings.nginx
    return {
        "header_buffer_size": format_size(n.header_buffer_size),
        "client_max_body_size": format_size(n.client_max_body_size),
        "proxy_buffer_size": format_size(n.proxy_buffer_size),
        # 8 buffers of the head's size; busy buffers must fit in all but one of them.
        "proxy_buffers": f"8 {format_size(n.proxy_buffer_size)}",
        "proxy_busy_buffers_size": format_size(2 * n.proxy_buffer_size),
        # Each proxied request holds two descriptors: the client's and the upstream's.
        "worker_rlimit_nofile": 2 * n.worker_connections + 64,
    }


def _forwarding(loaded: Loaded) -> dict[str, Any]:
    """What nginx believes of the trusted proxies' headers: the entry ``trusted_proxy_hops``
    places from the right (each appending proxy writes at the right end; the client wrote the
    rest).  One hop is realip without recursion; realip has no count, so more hops are read
    with a map regex that must find exactly hops - 1 entries right of the believed one."""
    hops = loaded.settings.nginx.trusted_proxy_hops
    # "1:" is $from_trusted_proxy: only a trusted peer's header is read at all.
    right = f"(?:,[^,]*){{{hops - 1}}}" if hops > 1 else ""
    return {
        "client_addr": "$remote_addr" if hops == 1 else "$client_addr",
        "forwarded_for_pattern": None if hops == 1
        else rf"~^1:(?:.*,)?\s*(?<forwarded_client>[0-9A-Fa-f.:]+)\s*{right}$",
        "forwarded_proto_pattern": rf"~*^1:(?:.*,)?\s*(?<forwarded_scheme>https?)\s*{right}$",
    }


def proxy_locations(loaded: Loaded) -> list[ProxyLocation]:
    """Every proxied location, computed once: the WebSocket and unbuffered prefixes in the order
    the settings list them (a prefix in both lists is one location), then the catch-all "/"
    (which the lists may also name)."""
    n = loaded.settings.nginx
    websocket = set(n.websocket_locations)
    unbuffered = set(n.unbuffered_locations) | websocket  # nginx never buffers a tunnel anyway
    prefixes = list(dict.fromkeys([*n.websocket_locations, *n.unbuffered_locations]))
    prefixes = [p for p in prefixes if p != "/"] + ["/"]
    return [ProxyLocation(p, p in websocket, p in unbuffered) for p in prefixes]


def _resolve_docker_group(name: str | None) -> int | None:
    if name is None:
        return APP_UID  # the app user's primary group
    if name.isdigit():
        return int(name)
    return DOCKER_GROUPS.get(name)


def docker_plan(loaded: Loaded, out_dir: Path | None = None, *, root: Path | None = None) -> Plan:
    """The docker target.  ``root`` rebases every container path (for an unprivileged ``nginx -t``
    on the host); ``out_dir`` is where compose.yaml goes (default: beside the settings file)."""
    s = loaded.settings
    n = s.nginx
    out = (out_dir or loaded.directory).absolute()

    def at(path: str) -> str:
        return str(root / path.lstrip("/")) if root else path

    socket_group = s.server.socket_group if "socket_group" in loaded.explicit_server_keys \
        else NGINX_USER
    socket_path = at(f"{DOCKER_SOCKET_DIR}/{SOCKET_NAME}")
    table, config = server_table(loaded, socket_path=f"{DOCKER_SOCKET_DIR}/{SOCKET_NAME}",
                                 app_dir=DOCKER_APP_DIR, socket_group=socket_group,
                                 target="docker")
    tls = n.tls
    context = os.path.relpath(loaded.directory, out)

    def from_context(rel: str) -> str:
        return PurePosixPath(os.path.relpath(out / rel, loaded.directory)).as_posix()

    tls_mounts = []
    if tls.enabled:
        for host, name in ((tls.certificate, "fullchain.pem"), (tls.certificate_key, "privkey.pem")):
            host_path = host if os.path.isabs(host) else \
                os.path.relpath(loaded.directory / host, out)
            if not host_path.startswith(("/", ".")):
                host_path = f"./{host_path}"  # compose reads a bare "tls/x.pem" as a volume name
            tls_mounts.append((host_path, f"{DOCKER_TLS_DIR}/{name}"))
    # The host ports can be changed when compose runs (NGINX_HTTP_PORT=9000 docker compose up),
    # without a render: compose interpolates ${VAR:-default}.
    address = s.compose.publish_address
    ports = [f"{address}:${{{HTTP_PORT_ENV}:-{s.compose.published_port}}}:{n.listen_port}"]
    if tls.enabled:
        ports.append(f"{address}:${{{HTTPS_PORT_ENV}:-{s.compose.published_tls_port}}}:"
                     f"{tls.listen_port}")
    health_request = (f"exec 3<>/dev/tcp/127.0.0.1/{HEALTH_PORT} && printf 'GET "
                      f"{s.app.health_path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && "
                      "head -n 1 <&3 | grep -q ' 200 '")
    docker = DockerPlan(
        context=PurePosixPath(Path(context)).as_posix(),
        app_dockerfile=from_context(APP_DOCKERFILE),
        nginx_dockerfile=from_context(NGINX_DOCKERFILE),
        nginx_conf_src=from_context(NGINX_CONF),
        server_config_src=from_context(SERVER_CONFIG),
        app_src=PurePosixPath(s.app.directory).as_posix(),
        static_src=PurePosixPath(n.static_dir).as_posix() if n.static_dir else None,
        pip_args=" ".join(shlex.quote(arg) for arg in [
            *s.app.packages, *([REDIS_REQUIREMENT] if s.redis.enabled else [])]),
        tls_mounts=tls_mounts,
        stop_grace_period=s.compose.stop_grace_period
        or config.graceful_timeout + STOP_MARGIN,
        app_healthcheck=["CMD", f"{VENV}/bin/python", "-m", "appserver.bundle.healthcheck",
                         f"{DOCKER_SOCKET_DIR}/{SOCKET_NAME}", s.app.health_path],
        nginx_healthcheck=["CMD", "bash", "-c", health_request],
        ports=ports,
        redis_dockerfile=from_context(REDIS_DOCKERFILE),
        redis_url=(REDIS_COMPOSE_URL if s.redis.mode == "local" else s.redis.url),
        monitoring_dockerfile=from_context(MONITORING_DOCKERFILE),
        prometheus_config_src=from_context(PROMETHEUS_CONFIG),
        alert_rules_src=from_context(ALERT_RULES),
        prometheus_ports=[f"{address}:${{{PROMETHEUS_PORT_ENV}:-{s.metrics.prometheus_port}}}:9090"],
        prometheus_healthcheck=["CMD", "bash", "-c", (
            "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /-/ready HTTP/1.0\\r\\n\\r\\n' >&3 "
            "&& head -n 1 <&3 | grep -q ' 200 '")],
    )
    https_port = s.compose.published_tls_port
    is_root = os.geteuid() == 0
    keep_user = root is None or (is_root and _user_exists(NGINX_USER))
    return Plan(
        target="docker", header=header_line(loaded),
        socket_dir=at(DOCKER_SOCKET_DIR), socket_path=socket_path,
        server_config_path=DOCKER_SERVER_CONFIG,
        nginx_user=NGINX_USER if keep_user else None,
        nginx_group=NGINX_USER if keep_user else None,
        pid_path=at("/run/nginx.pid"), temp_dir=at("/var/lib/nginx"),
        # A rebased copy (nginx -t by a plain user) must not need this process's stdout.
        error_log="stderr",
        access_log=(str(root / "access.log") if root else "/dev/stdout") if n.access_log else None,
        http_listens=[str(n.listen_port)] + ([f"[::]:{n.listen_port}"] if n.ipv6 else []),
        https_listens=[str(tls.listen_port)] + ([f"[::]:{tls.listen_port}"] if n.ipv6 else []),
        https_redirect_suffix="" if https_port == 443 else f":{https_port}",
        static_root=at(DOCKER_STATIC_DIR) + "/" if n.static_dir else None,
        tls_certificate=at(f"{DOCKER_TLS_DIR}/fullchain.pem") if tls.enabled else None,
        tls_certificate_key=at(f"{DOCKER_TLS_DIR}/privkey.pem") if tls.enabled else None,
        health_listen=f"127.0.0.1:{HEALTH_PORT}",
        server=config, server_table=table,
        socket_owner_uid=APP_UID, socket_gid=_resolve_docker_group(socket_group),
        nginx_uid=NGINX_UID, nginx_gids=frozenset({NGINX_UID}),
        docker=docker, proxy_locations=proxy_locations(loaded), **_limits(loaded),
        **_forwarding(loaded), public_upstreams=(f"unix:{socket_path}",),
        metrics=metrics_plan(loaded, "docker"),
    )


def local_plan(loaded: Loaded, run_dir: Path, *, port: int | None = None,
               tls_port: int | None = None) -> Plan:
    """The local target: every path under ``run_dir``, nginx's workers as the invoking user."""
    s = loaded.settings
    n = s.nginx
    run = run_dir.absolute()
    socket_path = str(run / SOCKET_NAME)
    app_dir = str((loaded.directory / s.app.directory).resolve())
    table, config = server_table(loaded, socket_path=socket_path, app_dir=app_dir,
                                 socket_group=None, target="local")
    address = s.compose.publish_address
    v6 = {"127.0.0.1": "[::1]", "0.0.0.0": "[::]"}.get(address)
    http_port = port or s.compose.published_port
    https_port = tls_port or s.compose.published_tls_port

    def listens(p: int) -> list[str]:
        return [f"{address}:{p}"] + ([f"{v6}:{p}"] if n.ipv6 and v6 else [])

    uid, gid = os.geteuid(), os.getegid()
    # As root, nginx would otherwise drop its workers to "nobody", who cannot reach a socket
    # owned by root with mode 0660; a plain user's nginx ignores the directive anyway.
    user = pwd.getpwuid(uid).pw_name if uid == 0 else None
    group = grp.getgrgid(gid).gr_name if uid == 0 else None
    tls = n.tls

    def host_path(p: str) -> str:
        return str((loaded.directory / p).absolute())

    return Plan(
        target="local", header=header_line(loaded),
        socket_dir=str(run), socket_path=socket_path,
        server_config_path=str(run / "appserver.toml"),
        nginx_user=user, nginx_group=group,
        pid_path=str(run / "nginx.pid"), temp_dir=str(run / "tmp"),
        error_log=str(run / "nginx-error.log"),
        access_log=str(run / "nginx-access.log") if n.access_log else None,
        http_listens=listens(http_port), https_listens=listens(https_port),
        https_redirect_suffix="" if https_port == 443 else f":{https_port}",
        static_root=str((loaded.directory / n.static_dir).resolve()) + "/" if n.static_dir
        else None,
        tls_certificate=host_path(tls.certificate) if tls.enabled else None,
        tls_certificate_key=host_path(tls.certificate_key) if tls.enabled else None,
        health_listen=None,
        server=config, server_table=table,
        socket_owner_uid=uid, socket_gid=gid,
        nginx_uid=uid, nginx_gids=frozenset({gid, *os.getgroups()}),
        proxy_locations=proxy_locations(loaded), **_limits(loaded), **_forwarding(loaded),
        public_upstreams=(f"unix:{socket_path}",), metrics=metrics_plan(loaded, "local"),
    )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
