"""``[metrics]`` of the bundle's settings file (see :mod:`appserver.bundle.settings`): the app
server's metrics listener, nginx's stub_status and the rendered Prometheus files
(:mod:`appserver.bundle.monitoring` places them per target; docs/monitoring.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from appserver.bundle.values import Strict

# Hosts the metrics listener may bind locally: loopback only, so the numbers stay inside the
# deployment (in Docker the bundle chooses the address itself: the app container's, unpublished).
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "localhost")


class MetricsSettings(BaseModel):
    model_config = Strict

    enabled: bool = Field(
        False, description="true or false: the app server serves GET /metrics (Prometheus text "
        "format) on its own listener (metrics.bind), and deploy/prometheus.yml scrapes it")
    bind: str = Field(
        "127.0.0.1:9101", description="HOST:PORT of the server's metrics listener in the local "
        "stack, HOST a loopback address (127.0.0.1, [::1] or localhost); in Docker the same PORT "
        "on the app container's address on the compose network, never published to the host")
    nginx_status: bool = Field(
        True, description="true or false: nginx serves its own numbers (stub_status) on "
        "127.0.0.1:metrics.nginx_status_port, loopback only, for prometheus-nginx-exporter")
    nginx_status_port: int = Field(8082, ge=1, le=65535, description="loopback port of nginx's "
                                   "stub_status server, 1-65535")
    nginx_exporter_port: int = Field(
        9113, ge=1, le=65535, description="port prometheus-nginx-exporter listens on (it turns "
        "stub_status into Prometheus metrics), 1-65535: on 127.0.0.1 locally, in the nginx "
        "container's network in Docker")
    prometheus_port: int = Field(
        9090, ge=1, le=65535, description="host port of the compose stack's optional Prometheus "
        "(`docker compose --profile monitoring up`), published on compose.publish_address, 1-65535")
    scrape_interval: int = Field(15, ge=1, le=300, description="seconds between two scrapes in "
                                 "deploy/prometheus.yml (and between rule evaluations), 1-300")
    alert_5xx_ratio: float = Field(
        0.05, gt=0, lt=1, description="share of responses that are 5xx (over 5 minutes) above "
        "which the AppserverHigh5xxRate alert fires, between 0 and 1 (e.g. 0.05 = 5%)")

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        if value.startswith("unix:"):
            raise ValueError(
                f"{value!r}: Prometheus scrapes TCP only, so the metrics listener needs a port; "
                "use a loopback address such as \"127.0.0.1:9101\"")
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT with a port 1-65535, e.g. "
                             "\"127.0.0.1:9101\"")
        if host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"{value!r}: the metrics must stay inside the deployment, so HOST must be a "
                f"loopback address ({', '.join(LOOPBACK_HOSTS)}), e.g. \"127.0.0.1:{port}\"; "
                "Prometheus on another machine scrapes through its own agent or a tunnel")
        return value

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])

    @model_validator(mode="after")
    def _ports_differ(self) -> MetricsSettings:
        used = {"metrics.bind": self.port}
        if self.nginx_status:
            used["metrics.nginx_status_port"] = self.nginx_status_port
            used["metrics.nginx_exporter_port"] = self.nginx_exporter_port
        names = list(used)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if used[a] == used[b]:
                    raise ValueError(f"{a} and {b} both use port {used[a]}; choose another "
                                     f"port for one of them")
        return self
