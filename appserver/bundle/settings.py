"""The bundle's settings file: ``[server]``, ``[app]``, ``[nginx]``, ``[compose]`` and ``[metrics]``.

``[server]`` is the app server's own :class:`~appserver.config.ServerConfig`, reused as it is, so a
server setting is declared exactly once.  The other tables are declared here ([metrics] in
:mod:`appserver.bundle.settings_metrics`, [kubernetes] in
:mod:`appserver.bundle.settings_kubernetes`).  Every model forbids
unknown keys, and each field's description says what is allowed: :mod:`appserver.bundle.loading`
prints it in every error, with the file, the key path and the bad value.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from appserver.bundle.settings_kubernetes import KubernetesSettings
from appserver.bundle.settings_metrics import MetricsSettings
from appserver.bundle.settings_redis import RedisSettings
from appserver.bundle.settings_systemd import SystemdSettings
from appserver.bundle.values import (
    HEADER_NAME,
    HOSTNAME,
    PLAIN,
    Location,
    Size,
    Strict,
    header_value,
    location,
    relative_inside,
)
from appserver.config import ConfigError, ServerConfig


class SettingsError(ConfigError):
    """The settings file is invalid, or its layers disagree; one line per problem."""


# --------------------------------------------------------------------------------------------
# [app]


class AppSettings(BaseModel):
    model_config = Strict

    module: str = Field(
        description="the app as MODULE:CALLABLE (or MODULE:factory()), importable from "
        "app.directory; required")
    interface: Literal["wsgi", "asgi"] = Field(
        "wsgi", description='the app\'s interface: "wsgi" (PEP 3333) or "asgi" (ASGI 3.0: '
        "Starlette, FastAPI, Django's ASGI handler, Quart); asgi runs on the asyncio worker "
        "class, which the bundle then chooses")
    directory: str = Field(
        ".", description="directory holding the app, relative to the settings file and inside the "
        "project (the server changes into it and puts it on sys.path)")
    packages: list[Annotated[str, Field(min_length=1)]] = Field(
        ["."], min_length=1,
        description="pip arguments that install the server and the app in the app image, e.g. "
        '["."] (this project) or ["appserver", "-r", "requirements.txt"]; wheels come from '
        "./wheelhouse when it holds any")
    health_path: str = Field(
        "/healthz", description="URL path of the app's health endpoint (a GET answering 200), used "
        "by the compose health checks")

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        # The server's own validator decides what an app spec is (one declaration).
        try:
            ServerConfig.model_validate({"wsgi_app": value})
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        return relative_inside(value, "the app")

    @field_validator("health_path")
    @classmethod
    def _health(cls, value: str) -> str:
        return location(value)


# --------------------------------------------------------------------------------------------
# [nginx]


ReferrerPolicy = Literal[
    "", "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
    "same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url"]


class SecurityHeaders(BaseModel):
    model_config = Strict

    x_content_type_options: bool = Field(
        True, description="true or false: send X-Content-Type-Options: nosniff")
    referrer_policy: ReferrerPolicy = Field(
        "strict-origin-when-cross-origin",
        description='a Referrer-Policy value (W3C Referrer Policy), or "" to send none')
    content_security_policy: str = Field(
        "frame-ancestors 'self'",
        description="Content-Security-Policy value (frame-ancestors replaces X-Frame-Options), "
        'or "" to send none; no $, double quotes or line breaks')
    extra: dict[Annotated[str, Field(pattern=HEADER_NAME.pattern)], str] = Field(
        {}, description="more response headers, NAME = VALUE, e.g. Permissions-Policy; no $, "
        "double quotes or line breaks in values")

    @field_validator("content_security_policy")
    @classmethod
    def _csp(cls, value: str) -> str:
        return header_value(value)

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name.lower() == "x-xss-protection":
                raise ValueError("X-XSS-Protection is obsolete and can create XSS holes in old "
                                 "browsers; use content_security_policy")
            header_value(text)
        return value


class TlsSettings(BaseModel):
    model_config = Strict

    enabled: bool = Field(False, description="true or false: serve HTTPS (Mozilla intermediate)")
    listen_port: int = Field(443, ge=1, le=65535, description="HTTPS port nginx listens on in "
                             "its container, 1-65535")
    certificate: str = Field(
        "deploy/tls/fullchain.pem", description="PEM certificate chain on the host, relative to "
        "the settings file or absolute (mounted read-only into the nginx container)")
    certificate_key: str = Field(
        "deploy/tls/privkey.pem", description="PEM private key on the host, relative to the "
        "settings file or absolute")
    redirect_http: bool = Field(True, description="true or false: answer plain HTTP with a 301 "
                                "to HTTPS")
    hsts_max_age: int = Field(
        63072000, ge=0, le=63072000 * 5,
        description="Strict-Transport-Security max-age in seconds (Mozilla: 63072000, two years); "
        "0 sends no HSTS header")
    http2: bool = Field(True, description="true or false: offer HTTP/2 on the TLS port")

    @field_validator("certificate", "certificate_key")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value or not PLAIN.fullmatch(value):
            raise ValueError(f"{value!r} must be a file path without whitespace, quotes or ;{{}}$#")
        return value


class NginxSettings(BaseModel):
    model_config = Strict

    listen_port: int = Field(80, ge=1, le=65535, description="HTTP port nginx listens on in its "
                             "container, 1-65535")
    ipv6: bool = Field(False, description="true or false: also listen on IPv6")
    server_names: list[Annotated[str, Field(pattern=HOSTNAME.pattern)]] = Field(
        [], description="host names served (e.g. example.com, *.example.com); requests for "
        "other hosts are dropped (444); empty: serve every host")
    worker_processes: int | Literal["auto"] = Field(
        "auto", description='"auto" (one per core) or a number of nginx worker processes, 1-64')
    worker_connections: int = Field(1024, ge=16, le=65535, description="connections per nginx "
                                    "worker (clients and upstream together), 16-65535")
    client_max_body_size: Size = Field(
        10 << 20, le=1 << 40, description="largest request body (e.g. 10m; 0: no limit); nginx "
        "answers 413 beyond it, and the server's limit_request_body is derived from it")
    header_buffer_size: Size = Field(
        8 << 10, ge=1024, le=65536, description="longest request line or header field nginx "
        "accepts, 1k-64k (large_client_header_buffers size); the server's limit_request_line and "
        "limit_request_field_size are derived from it")
    header_buffers: int = Field(4, ge=2, le=64, description="number of header buffers "
                                "(large_client_header_buffers number), 2-64")
    client_keepalive_timeout: int = Field(65, ge=0, le=3600, description="seconds an idle "
                                          "client connection stays open, 0-3600")
    proxy_connect_timeout: int = Field(5, ge=1, le=75, description="seconds to connect to the "
                                       "app server, 1-75")
    proxy_read_timeout: int = Field(
        60, ge=1, le=86400, description="seconds nginx waits between two reads from the app "
        "server, 1-86400; at least server.timeout")
    proxy_send_timeout: int = Field(60, ge=1, le=86400, description="seconds nginx waits between "
                                    "two writes to the app server, 1-86400")
    buffering: bool = Field(
        True, description="true or false: buffer requests and responses (protects sync workers "
        "from slow clients); streaming responses opt out with X-Accel-Buffering: no")
    proxy_buffer_size: Size = Field(
        8 << 10, ge=4096, le=1 << 20, description="buffer for the app's response head (4k-1m); "
        "larger response heads get a 502")
    unbuffered_locations: list[Location] = Field(
        [], description="URL path prefixes proxied without buffering (streaming, server-sent "
        "events, long uploads)")
    websocket_locations: list[Location] = Field(
        [], description='URL path prefixes where nginx passes WebSocket upgrades to the app '
        '(e.g. ["/ws/"]), unbuffered and with nginx.websocket_read_timeout; nowhere else is the '
        "Upgrade header passed on; needs a worker class that holds connections (gthread)")
    websocket_read_timeout: int = Field(
        60, ge=1, le=86400, description="seconds a WebSocket may stay silent before nginx closes "
        "it, 1-86400; must exceed server.websocket_ping_interval (the server's pings keep an idle "
        "WebSocket alive)")
    gzip: bool = Field(True, description="true or false: compress responses")
    gzip_types: list[Annotated[str, Field(pattern=r"[a-z]+/[a-z0-9.+*-]+")]] = Field(
        ["text/css", "text/plain", "text/javascript", "application/javascript",
         "application/json", "image/svg+xml"],
        description="MIME types compressed besides text/html")
    gzip_min_length: int = Field(256, ge=0, description="smallest response compressed, in bytes")
    gzip_comp_level: int = Field(5, ge=1, le=9, description="gzip level, 1-9")
    static_url: str = Field(
        "/static/", description="URL prefix of the static files nginx serves itself, starting "
        "and ending with /")
    static_dir: str = Field(
        "sample_app/static", description='directory of static files, relative to the settings '
        'file and inside the project; "" serves none')
    static_expires: str = Field(
        "1h", pattern=r"off|epoch|max|\d+[smhdwMy]?",
        description="Cache lifetime of static files in nginx time (30m, 1h, 7d), off, epoch or max")
    access_log: bool = Field(True, description="true or false: log every request")
    upstream_keepalive: int = Field(
        32, ge=0, le=1024, description="idle connections to the app server each nginx worker "
        "keeps open, 0-1024; 0 turns upstream keep-alive off")
    upstream_keepalive_timeout: int = Field(
        60, ge=1, le=3000, description="seconds an idle upstream connection is kept, 1-3000; the "
        "server's keep_alive is derived from it and must exceed it")
    trusted_proxies: list[str] = Field(
        [], description="addresses or CIDR ranges of the proxies that connect to nginx and may "
        "send X-Forwarded-For/-Proto (realip); empty: nginx is the edge and believes none")
    trusted_proxy_hops: int = Field(
        1, ge=1, le=32, description="appending proxies in front of nginx, 1-32: the "
        "X-Forwarded-For/-Proto entry this many places from the right is believed (1: the one "
        "the proxy connected to nginx added); entries left of it come from the client and are "
        "ignored; needs nginx.trusted_proxies")
    # Models are frozen, so one default instance can be shared.
    security_headers: SecurityHeaders = SecurityHeaders.model_validate({})
    tls: TlsSettings = TlsSettings.model_validate({})

    @field_validator("worker_processes")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError(f"{value} is outside 1-64")
        return value

    @field_validator("static_url")
    @classmethod
    def _static_url(cls, value: str) -> str:
        location(value)
        if not value.endswith("/") or value == "/":
            raise ValueError(f"{value!r} must start and end with / and not be / itself")
        return value

    @field_validator("static_dir")
    @classmethod
    def _static_dir(cls, value: str) -> str:
        return value and relative_inside(value, "static files")

    @model_validator(mode="after")
    def _distinct_locations(self) -> NginxSettings:
        # Two nginx locations with one prefix fail `nginx -t` ("duplicate location"); say which
        # settings collide instead.  A WebSocket location is unbuffered anyway, so a prefix in
        # both lists is one location, not a conflict.
        owners: dict[str, str] = {}
        if self.static_dir:
            owners[self.static_url] = "nginx.static_url"
        for key in ("unbuffered_locations", "websocket_locations"):
            seen: set[str] = set()
            for prefix in getattr(self, key):
                if prefix in seen:
                    raise ValueError(f"{prefix!r} is listed twice in nginx.{key}")
                seen.add(prefix)
                other = owners.get(prefix)
                if other == "nginx.static_url":
                    raise ValueError(f"{prefix!r} is both nginx.static_url (files served by nginx) "
                                     f"and in nginx.{key} (proxied to the app); choose one")
                owners.setdefault(prefix, f"nginx.{key}")
        return self

    @model_validator(mode="after")
    def _hops_need_proxies(self) -> NginxSettings:
        if self.trusted_proxy_hops > 1 and not self.trusted_proxies:
            raise ValueError(f"trusted_proxy_hops = {self.trusted_proxy_hops} needs "
                             "trusted_proxies: list the proxies that connect to nginx, or set "
                             "trusted_proxy_hops = 1")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR range such as "
                                 "10.0.0.0/8") from None
        return value


# --------------------------------------------------------------------------------------------
# [compose]


class ComposeSettings(BaseModel):
    model_config = Strict

    project_name: str = Field("appserver", pattern=r"[a-z0-9][a-z0-9_-]*",
                              description="compose project name: lowercase letters, digits, - _")
    publish_address: str = Field(
        "127.0.0.1", description='host address the ports are published on: "127.0.0.1" (this '
        'machine only) or "0.0.0.0" (every interface); `appserver up` listens there too')
    published_port: int = Field(8080, ge=1, le=65535, description="host port for HTTP, 1-65535 "
                                "(also the port of `appserver up`); NGINX_HTTP_PORT overrides it "
                                "when compose runs")
    published_tls_port: int = Field(8443, ge=1, le=65535, description="host port for HTTPS when "
                                    "nginx.tls.enabled, 1-65535; NGINX_HTTPS_PORT overrides it "
                                    "when compose runs")
    app_image: str = Field("appserver-app:latest", pattern=r"[a-z0-9][a-z0-9._/:-]*",
                           description="image name of the app server")
    nginx_image: str = Field("appserver-nginx:latest", pattern=r"[a-z0-9][a-z0-9._/:-]*",
                             description="image name of nginx")
    restart: Literal["no", "always", "on-failure", "unless-stopped"] = Field(
        "unless-stopped", description="restart policy: no, always, on-failure, unless-stopped")
    stop_grace_period: int | None = Field(
        None, ge=1, le=3600, description="seconds compose waits after SIGTERM before SIGKILL, "
        "1-3600; unset: server.graceful_timeout + 5")
    healthcheck_interval: int = Field(5, ge=1, le=300, description="seconds between health "
                                      "checks, 1-300")
    app_cpus: float | None = Field(None, gt=0, le=1024, description="CPU limit of the app "
                                   "container (e.g. 1.5); unset: none")
    app_memory: Size | None = Field(None, ge=1 << 22, description="memory limit of the app "
                                    "container (e.g. 512m, at least 4m); unset: none")
    nginx_cpus: float | None = Field(None, gt=0, le=1024, description="CPU limit of the nginx "
                                     "container; unset: none")
    nginx_memory: Size | None = Field(None, ge=1 << 22, description="memory limit of the nginx "
                                      "container (e.g. 128m); unset: none")

    @field_validator("publish_address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address such as 127.0.0.1") from None
        return value

    @model_validator(mode="after")
    def _ports_differ(self) -> ComposeSettings:
        if self.published_port == self.published_tls_port:
            raise ValueError(f"published_port and published_tls_port are both "
                             f"{self.published_port}; they must differ")
        return self


# --------------------------------------------------------------------------------------------
# The whole file.


class BundleSettings(BaseModel):
    model_config = Strict

    server: ServerConfig = Field(default_factory=ServerConfig,
                                 description="the app server's settings")
    app: AppSettings = Field(description="the app to serve; required")
    nginx: NginxSettings = NginxSettings.model_validate({})
    compose: ComposeSettings = ComposeSettings.model_validate({})
    metrics: MetricsSettings = MetricsSettings.model_validate({})
    redis: RedisSettings = RedisSettings.model_validate({})
    systemd: SystemdSettings = SystemdSettings.model_validate({})
    kubernetes: KubernetesSettings = KubernetesSettings.model_validate({})


# Server settings the bundle computes for every target; setting them in [server] is an error.
COMPUTED_SERVER_KEYS = {
    "bind": "the bundle binds the unix socket on the shared volume",
    "wsgi_app": "set app.module instead",
    "chdir": "set app.directory instead",
    "interface": "set app.interface instead",
    "pidfile": "the bundle runs the server in the foreground and tracks its PID itself",
    "metrics_bind": "set metrics.enabled = true (and metrics.bind) instead: the bundle binds "
    "the metrics listener where nginx's public server cannot reach it",
}


def interface_problems(settings: BundleSettings, explicit_server_keys: frozenset[str],
                       path: object) -> list[str]:
    """``app.interface`` against the worker class: ASGI apps run on the asyncio class only, and
    the worker classes named after ASGI servers (``asgi``, uvicorn's) serve ASGI apps only."""
    app, server = settings.app, settings.server
    if "worker_class" not in explicit_server_keys:
        return []  # derived from app.interface
    if app.interface == "asgi" and server.worker_class != "asyncio":
        return [f'{path}: server.worker_class = "{server.worker_class}" cannot serve app.interface '
                f'= "asgi": ASGI apps run on the asyncio worker class; set server.worker_class = '
                f'"asyncio" (or remove it: app.interface = "asgi" chooses asyncio), or set '
                f'app.interface = "wsgi" for a WSGI app']
    if app.interface == "wsgi" and server.interface == "asgi":
        return [f"{path}: server.worker_class names an ASGI worker (it means asyncio with "
                f'interface "asgi"), but app.interface = "wsgi": set app.interface = "asgi" '
                f'(and server.worker_class = "asyncio", or remove it), or choose a WSGI '
                f"worker class such as gthread"]
    return []
