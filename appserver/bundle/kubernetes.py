"""The Kubernetes target: the pod's values, computed once, for ``templates/kubernetes/*.j2``.

One pod runs the two images compose runs: nginx and the app server, sharing the server's unix
socket on an emptyDir.  The pod's nginx.conf is the docker target's, changed where a pod differs
(:func:`pod_nginx`): nginx runs as www-data from the start (no root master, so no ``user``
directive) on an unprivileged port, writes its pid and temp files to emptyDirs (the root
filesystem is read-only), serves plain HTTP (TLS ends at the Ingress), and answers the health
path with 503 once the preStop hook has created the drain file.  The server's config is the
docker target's ``deploy/appserver.toml`` as it is: the socket path and users are the same.

The shutdown choreography (docs/kubernetes.md has the timeline): when the pod is told to stop,
both containers' preStop hooks start.  nginx's creates the drain file (readiness turns red) and
sleeps ``prestop_sleep`` while the endpoints drop the pod; then the runtime sends the image's
STOPSIGNAL, SIGQUIT, nginx's graceful stop.  The app's hook sleeps ``app_stop_delay`` longer, so
SIGTERM (the server's graceful stop: WebSockets get 1001) comes after nginx stopped accepting.
:mod:`appserver.bundle.crosscheck_kubernetes` checks the timings against each other.

The ConfigMap's name ends with a hash of its content, as kustomize's configMapGenerator would
name it, but computed here: a changed config is a new ConfigMap, so the Deployment's pod template
changes and a rolling update starts, and old pods keep the files they started with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appserver.bundle.loading import Loaded
from appserver.bundle.plan import (
    APP_UID,
    DOCKER_SERVER_CONFIG,
    NGINX_UID,
    SOCKET_NAME,
    VENV,
    Plan,
)
from appserver.bundle.settings_kubernetes import DNS_1035, ContainerResources

OUT_DIR = "deploy/kubernetes"  # relative to the render's output directory, like deploy/appserver.toml
NGINX_CONF_DIR = "/etc/appserver-nginx"  # the ConfigMap's nginx.conf (the image's own stays unused)
SERVER_CONF_DIR = DOCKER_SERVER_CONFIG.rpartition("/")[0]  # /etc/appserver, as in the image
NGINX_RUN_DIR = "/run/nginx"  # pid file and drain file (an emptyDir)
DRAIN_FILE = f"{NGINX_RUN_DIR}/draining"
NGINX_TEMP_DIR = "/var/lib/nginx"  # request bodies and proxied responses nginx buffers to disk
SERVICE_PORT = 80
REDIS_PORT = 6379
# The redis image runs as Debian's redis user, whose uid the package picks at install time; the
# kubelet can only enforce runAsNonRoot on a number, so the pod names one (any uid works: Redis
# writes only to its emptyDir).
REDIS_UID = 10002
REDIS_DATA_DIR = "/data"
TERMINATION_MARGIN = 5  # seconds past the app's graceful stop (derived terminationGracePeriod)
STOP_MARGIN_MIN = 2  # the master's last moment after its last worker exits (as for compose)

# Manifest files (relative to OUT_DIR) and their templates, in the kustomization's order.
BASE_FILES = {
    "configmap.yaml": "kubernetes/configmap.yaml.j2",
    "deployment.yaml": "kubernetes/deployment.yaml.j2",
    "service.yaml": "kubernetes/service.yaml.j2",
    "poddisruptionbudget.yaml": "kubernetes/poddisruptionbudget.yaml.j2",
}
REDIS_FILE = ("redis.yaml", "kubernetes/redis.yaml.j2")
INGRESS_FILE = ("ingress.yaml", "kubernetes/ingress.yaml.j2")
HPA_FILE = ("horizontalpodautoscaler.yaml", "kubernetes/horizontalpodautoscaler.yaml.j2")
KUSTOMIZATION = ("kustomization.yaml", "kubernetes/kustomization.yaml.j2")


@dataclass(frozen=True)
class Timings:
    """Seconds from the stop request (t = 0)."""

    prestop_sleep: int  # nginx: drain file at 0, SIGQUIT at prestop_sleep
    app_term_at: int  # the app server's SIGTERM: prestop_sleep + app_stop_delay
    graceful_timeout: int  # the server's own bound on its graceful stop
    termination_grace_period: int  # SIGKILL for whatever still runs
    derived: bool  # termination_grace_period was not set: derived from the others


@dataclass(frozen=True)
class Probe:
    period: int
    failures: int
    timeout: int


@dataclass(frozen=True)
class IngressPlan:
    host: str | None
    tls_secret: str | None
    class_name: str | None
    annotations: dict[str, str]


@dataclass(frozen=True)
class RedisPlan:
    """[redis] mode = "local": its own Deployment and Service (the app pods scale, Redis not)."""

    name: str
    labels: dict[str, str]
    selector: dict[str, str]
    image: str
    uid: int
    port: int
    data_dir: str
    command: list[str]
    resources: dict[str, dict[str, str]]


@dataclass(frozen=True)
class KubePlan:
    header: str
    name: str
    namespace: str
    labels: dict[str, str]
    selector: dict[str, str]
    replicas: int | None  # None: the autoscaler sets the count
    app_image: str
    nginx_image: str
    pull_policy: str
    nginx_uid: int
    app_uid: int
    nginx_port: int
    service_port: int
    metrics_port: int | None
    config_name: str
    config_files: dict[str, str]  # file name -> rendered text
    nginx_conf_dir: str
    server_conf_dir: str
    nginx_command: list[str]
    app_command: list[str]
    socket_dir: str
    nginx_run_dir: str
    nginx_temp_dir: str
    health_path: str
    probe_host: str | None  # Host header of the HTTP probes (nginx drops unknown hosts)
    readiness: Probe
    startup: Probe
    liveness: Probe
    liveness_command: list[str]
    nginx_prestop: list[str]
    app_prestop: list[str]
    timings: Timings
    app_resources: dict[str, dict[str, str]]
    nginx_resources: dict[str, dict[str, str]]
    disruption_budget: tuple[str, int | str]  # ("minAvailable" | "maxUnavailable", value)
    ingress: IngressPlan | None
    autoscaling: dict[str, int] | None  # min, max, cpu
    redis_url: str | None  # the app's APPSERVER_REDIS_URL; None: [redis] is off
    redis: RedisPlan | None
    files: dict[str, str]  # manifest file -> template, the kustomization last
    resources: list[str]  # the kustomization's list


def object_name(loaded: Loaded) -> str:
    """kubernetes.name, else the compose project's name with "_" made "-" (may be invalid: the
    cross-check says so)."""
    k = loaded.settings.kubernetes
    return k.name or loaded.settings.compose.project_name.replace("_", "-")


def valid_name(name: str) -> bool:
    return re.fullmatch(DNS_1035, name) is not None


def timings(loaded: Loaded, graceful_timeout: float) -> Timings:
    k = loaded.settings.kubernetes
    app_term_at = k.prestop_sleep + k.app_stop_delay
    graceful = int(-(-graceful_timeout // 1))  # whole seconds, rounded up
    derived = k.termination_grace_period is None
    grace = k.termination_grace_period or app_term_at + graceful + TERMINATION_MARGIN
    return Timings(k.prestop_sleep, app_term_at, graceful, grace, derived)


def cpu_quantity(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: int) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def container_resources(own: ContainerResources, compose_cpus: float | None,
                        compose_memory: int | None) -> dict[str, dict[str, str]]:
    """requests and limits of one container; unset limits fall back to compose's."""
    cpu_limit = own.cpu_limit if own.cpu_limit is not None else compose_cpus
    memory_limit = own.memory_limit if own.memory_limit is not None else compose_memory
    out: dict[str, dict[str, str]] = {}
    requests = {"cpu": own.cpu_request, "memory": own.memory_request}
    limits = {"cpu": cpu_limit, "memory": memory_limit}
    for key, values in (("requests", requests), ("limits", limits)):
        shown = {}
        if values["cpu"] is not None:
            shown["cpu"] = cpu_quantity(float(values["cpu"]))
        if values["memory"] is not None:
            shown["memory"] = memory_quantity(int(values["memory"]))
        if shown:
            out[key] = shown
    return out


def probe_host(server_names: list[str]) -> str | None:
    """A Host header nginx serves (with server_names set it drops every other host): the first
    name made concrete ("*.example.com" -> "probe.example.com", ".example.org" -> "example.org")."""
    if not server_names:
        return None
    name = server_names[0]
    if name.startswith("*."):
        return "probe" + name[1:]
    if name.startswith("."):
        return name[1:]
    if name.endswith(".*"):
        return name[:-2] + ".local"
    return name


def pod_nginx(loaded: Loaded, docker: Plan, root: Path | None = None) -> tuple[Loaded, Plan]:
    """The settings and plan the pod's nginx.conf is rendered from (see the module's note).
    ``root`` rebases the pod's own paths, with a ``docker`` plan rebased there too (nginx -t)."""

    def at(path: str) -> str:
        return str(root / path.lstrip("/")) if root else path

    s = loaded.settings
    k = s.kubernetes
    nginx = s.nginx.model_copy(update={"tls": s.nginx.tls.model_copy(update={"enabled": False})})
    pod_loaded = loaded.model_copy(update={"settings": s.model_copy(update={"nginx": nginx})})
    plan = dataclasses.replace(
        docker, target="kubernetes", nginx_user=None, nginx_group=None,
        pid_path=at(f"{NGINX_RUN_DIR}/nginx.pid"), temp_dir=at(NGINX_TEMP_DIR),
        http_listens=[str(k.nginx_port)] + ([f"[::]:{k.nginx_port}"] if s.nginx.ipv6 else []),
        https_listens=[], tls_certificate=None, tls_certificate_key=None,
        health_listen=None,  # compose's loopback health server: the kubelet probes nginx's port
        drain_file=at(DRAIN_FILE))
    return pod_loaded, plan


def config_name(name: str, files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for file_name in sorted(files):
        digest.update(file_name.encode() + b"\0" + files[file_name].encode() + b"\0")
    return f"{name}-config-{digest.hexdigest()[:10]}"


def kubernetes_plan(loaded: Loaded, docker: Plan, config_files: Mapping[str, str]) -> KubePlan:
    """``config_files``: the pod's rendered nginx.conf and appserver.toml."""
    s = loaded.settings
    k, c = s.kubernetes, s.compose
    name = object_name(loaded)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "web"}
    labels = {**selector, "app.kubernetes.io/managed-by": "appserver-render"}
    p = k.probes
    socket = f"{docker.socket_dir}/{SOCKET_NAME}"
    nginx_conf = f"{NGINX_CONF_DIR}/nginx.conf"
    t = timings(loaded, docker.server.graceful_timeout)
    budget: tuple[str, int | str] = (
        ("minAvailable", k.disruption_budget.min_available)
        if k.disruption_budget.min_available is not None
        else ("maxUnavailable", 1 if k.disruption_budget.max_unavailable is None
              else k.disruption_budget.max_unavailable))
    ingress = k.ingress
    files = dict(BASE_FILES)
    if ingress.enabled:
        files[INGRESS_FILE[0]] = INGRESS_FILE[1]
    if k.autoscaling.enabled:
        files[HPA_FILE[0]] = HPA_FILE[1]
    redis = _redis(loaded, name) if s.redis.mode == "local" else None
    if redis is not None:
        files[REDIS_FILE[0]] = REDIS_FILE[1]
    resources = list(files)
    files[KUSTOMIZATION[0]] = KUSTOMIZATION[1]
    return KubePlan(
        header=docker.header, name=name, namespace=k.namespace, labels=labels, selector=selector,
        replicas=None if k.autoscaling.enabled else k.replicas,
        app_image=k.app_image or c.app_image, nginx_image=k.nginx_image or c.nginx_image,
        pull_policy=k.image_pull_policy, nginx_uid=NGINX_UID, app_uid=APP_UID,
        nginx_port=k.nginx_port, service_port=SERVICE_PORT,
        metrics_port=docker.metrics.server_port if docker.metrics else None,
        config_name=config_name(name, config_files), config_files=dict(config_files),
        nginx_conf_dir=NGINX_CONF_DIR, server_conf_dir=SERVER_CONF_DIR,
        # -e stderr: nginx opens its compiled-in error log before reading the config, which
        # fails (with an alert) on the read-only root filesystem.
        nginx_command=["nginx", "-c", nginx_conf, "-e", "stderr"],
        app_command=[f"{VENV}/bin/appserver", "serve", "--settings", DOCKER_SERVER_CONFIG],
        socket_dir=docker.socket_dir, nginx_run_dir=NGINX_RUN_DIR, nginx_temp_dir=NGINX_TEMP_DIR,
        health_path=s.app.health_path, probe_host=probe_host(s.nginx.server_names),
        readiness=Probe(p.readiness_period, p.readiness_failures, p.timeout),
        startup=Probe(p.startup_period, -(-p.startup_timeout // p.startup_period), p.timeout),
        liveness=Probe(p.liveness_period, p.liveness_failures, p.timeout),
        # The compose health check's command: GET the health path on the server's own socket.
        liveness_command=[f"{VENV}/bin/python", "-m", "appserver.bundle.healthcheck", socket,
                          s.app.health_path],
        nginx_prestop=["/bin/sh", "-c", f"touch {DRAIN_FILE} && sleep {t.prestop_sleep}"],
        app_prestop=["sleep", str(t.app_term_at)],
        timings=t,
        app_resources=container_resources(k.resources.app, c.app_cpus, c.app_memory),
        nginx_resources=container_resources(k.resources.nginx, c.nginx_cpus, c.nginx_memory),
        disruption_budget=budget,
        ingress=IngressPlan(ingress.host or None, ingress.tls_secret or None,
                            ingress.class_name or None, dict(ingress.annotations))
        if ingress.enabled else None,
        autoscaling={"min": k.autoscaling.min_replicas, "max": k.autoscaling.max_replicas,
                     "cpu": k.autoscaling.target_cpu_percent} if k.autoscaling.enabled else None,
        redis_url=(f"redis://{redis.name}:{redis.port}/0" if redis is not None
                   else s.redis.url if s.redis.mode == "url" else None),
        redis=redis,
        files={f"{OUT_DIR}/{file}": template for file, template in files.items()},
        resources=resources,
    )


def _redis(loaded: Loaded, name: str) -> RedisPlan:
    r = loaded.settings.redis
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "redis"}
    return RedisPlan(
        name=f"{name}-redis", selector=selector,
        labels={**selector, "app.kubernetes.io/managed-by": "appserver-render"},
        image=r.image, uid=REDIS_UID, port=REDIS_PORT, data_dir=REDIS_DATA_DIR,
        # The compose image's command, stated: an append-only file on the pod's emptyDir.
        command=["redis-server", "--bind", "0.0.0.0", "--port", str(REDIS_PORT),
                 "--protected-mode", "no", "--dir", REDIS_DATA_DIR, "--appendonly", "yes",
                 "--save", ""],
        resources={"requests": {"cpu": cpu_quantity(min(r.cpus, 0.1)),
                                "memory": memory_quantity(r.memory)},
                   "limits": {"cpu": cpu_quantity(r.cpus), "memory": memory_quantity(r.memory)}},
    )
