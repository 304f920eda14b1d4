"""The monitoring values of one target (``[metrics]``), computed once for every file that uses them.

Where each listener sits, so that nothing of it is public:

- the app server's metrics listener (``GET /metrics``): locally ``metrics.bind`` (a loopback
  address); in Docker the same port on the app container's own address, which compose does not
  publish, so only containers on the compose network reach it (Prometheus scrapes ``app:PORT``);
- nginx's ``stub_status``: a server block of its own on ``127.0.0.1:metrics.nginx_status_port``
  (``allow 127.0.0.1; deny all;``), never a location of the public server block;
- ``prometheus-nginx-exporter``, which turns stub_status's text into Prometheus metrics (Prometheus
  cannot read stub_status itself): locally on ``127.0.0.1:metrics.nginx_exporter_port``; in Docker
  it must share the nginx container's network namespace to reach its loopback, and is then
  scraped as ``nginx:PORT``.

:func:`appserver.bundle.crosscheck.cross_check` verifies that no public nginx location proxies to
any of these addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from appserver.bundle.loading import Loaded
from appserver.config import ServerConfig

# The compose service names Prometheus reaches on the compose network (templates/compose.yaml.j2).
APP_SERVICE = "app"
NGINX_SERVICE = "nginx"
STUB_STATUS_PATH = "/stub_status"
# The master's control socket (`appserver status`), beside the app's socket: the same length as
# app.sock, so a run directory that fits one fits the other.
CONTROL_SOCKET_NAME = "ctl.sock"


@dataclass(frozen=True)
class MetricsPlan:
    server_bind: str  # what the server binds (its metrics_bind)
    server_port: int
    server_target: str  # what Prometheus scrapes for the server
    nginx_status_listen: str | None  # nginx's loopback stub_status server; None: off
    nginx_status_url: str | None  # what the exporter reads
    exporter_listen: str | None  # where prometheus-nginx-exporter listens
    exporter_target: str | None  # what Prometheus scrapes for nginx's numbers
    scrape_interval: int
    alert_5xx_ratio: float
    prometheus_port: int  # the compose profile's Prometheus, on the host

    @property
    def exporter_args(self) -> tuple[str, ...]:
        """prometheus-nginx-exporter's arguments (after its name), wherever it runs."""
        if self.nginx_status_url is None or self.exporter_listen is None:
            return ()
        return ("-nginx.scrape-uri", self.nginx_status_url,
                "-web.listen-address", self.exporter_listen)

    @property
    def private_addresses(self) -> tuple[str, ...]:
        """Every address of a monitoring listener, as nginx or Prometheus would name it."""
        found = [self.server_bind, self.server_target, self.nginx_status_listen,
                 self.exporter_listen, self.exporter_target]
        return tuple(dict.fromkeys(a for a in found if a))


def metrics_plan(loaded: Loaded, target: Literal["docker", "local"]) -> MetricsPlan | None:
    m = loaded.settings.metrics
    if not m.enabled:
        return None
    status = f"127.0.0.1:{m.nginx_status_port}" if m.nginx_status else None
    if target == "docker":
        # All interfaces of the app container: the compose network, not the host (no ports:).
        server_bind = f"0.0.0.0:{m.port}"
        server_target = f"{APP_SERVICE}:{m.port}"
        exporter_listen = f"0.0.0.0:{m.nginx_exporter_port}"
        exporter_target = f"{NGINX_SERVICE}:{m.nginx_exporter_port}"
    else:
        server_bind = server_target = m.bind
        exporter_listen = exporter_target = f"127.0.0.1:{m.nginx_exporter_port}"
    return MetricsPlan(
        server_bind=server_bind, server_port=m.port, server_target=server_target,
        nginx_status_listen=status,
        nginx_status_url=f"http://{status}{STUB_STATUS_PATH}" if status else None,
        exporter_listen=exporter_listen if status else None,
        exporter_target=exporter_target if status else None,
        scrape_interval=m.scrape_interval, alert_5xx_ratio=m.alert_5xx_ratio,
        prometheus_port=m.prometheus_port,
    )


def control_socket(loaded: Loaded, socket_dir: str) -> str | None:
    """Where the bundle puts the server's control socket, unless ``[server]`` says otherwise:
    beside the app's socket (the run directory locally; in Docker the socket volume, whose
    directory is the app user's and which nginx mounts read-only: the control socket's mode
    0600 keeps nginx out).  The server's own default is under $XDG_RUNTIME_DIR or the home
    directory, which the app image's user lacks, and which every local stack would share."""
    explicit = loaded.explicit_server_keys
    if "control_socket" not in ServerConfig.model_fields or explicit & {
            "control_socket", "control_socket_disable"}:
        return None
    return f"{socket_dir}/{CONTROL_SOCKET_NAME}"
