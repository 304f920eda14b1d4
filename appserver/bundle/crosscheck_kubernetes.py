"""Cross-checks of ``[kubernetes]`` against the other layers (called by
:mod:`appserver.bundle.crosscheck`, once, on the docker plan: the pod runs the docker images and
the docker target's server config).

The shutdown rules follow the pod's stop sequence (:mod:`appserver.bundle.kubernetes`):

1. readiness fails first: nginx's preStop hook turns the health path to 503 and then sleeps
   ``prestop_sleep``; the readiness probe needs ``readiness_period x readiness_failures`` seconds
   to see it, so the sleep must last at least that long (nginx must not stop accepting while
   a load balancer that follows the probe still sends it requests);
2. the app server's SIGTERM comes at ``prestop_sleep + app_stop_delay``, and its graceful stop
   (``server.graceful_timeout``, plus the master's last moment) must end before
   ``terminationGracePeriodSeconds``, when the kubelet sends SIGKILL.

Each line names the keys, their values and a fix, as the compose checks do.
"""

from __future__ import annotations

from appserver.bundle.kubernetes import STOP_MARGIN_MIN, object_name, timings, valid_name
from appserver.bundle.loading import Loaded
from appserver.bundle.plan import Plan
from appserver.bundle.settings_kubernetes import ContainerResources


def kubernetes_problems(loaded: Loaded, plan: Plan) -> list[str]:
    if plan.target != "docker":
        return []
    return (_name(loaded) + _shutdown(loaded, plan) + _ports(loaded, plan)
            + _resources(loaded) + _budget(loaded) + _ingress_host(loaded))


def kubernetes_warnings(loaded: Loaded, plan: Plan) -> list[str]:
    """None yet.  (``nginx.tls`` does not apply to the pod, whose nginx serves plain HTTP behind
    the Ingress; that is no warning, since it would then be printed to every compose user with
    TLS on: the ConfigMap and docs/kubernetes.md say so.)"""
    return []


def _name(loaded: Loaded) -> list[str]:
    name = object_name(loaded)
    if valid_name(name):
        return []
    return [f"{loaded.path}: compose.project_name = {loaded.settings.compose.project_name!r} "
            f"gives the Kubernetes name {name!r}, which is not a DNS label (lowercase letters, "
            f"digits and -, starting with a letter, at most 42 characters); set "
            f"kubernetes.name, e.g. \"app\""]


def _shutdown(loaded: Loaded, plan: Plan) -> list[str]:
    f, k = loaded.path, loaded.settings.kubernetes
    p = k.probes
    out = []
    red_after = p.readiness_period * p.readiness_failures
    if k.prestop_sleep < red_after:
        out.append(
            f"{f}: kubernetes.prestop_sleep = {k.prestop_sleep} is shorter than the readiness "
            f"probe needs to turn red (kubernetes.probes.readiness_period = {p.readiness_period} "
            f"x readiness_failures = {p.readiness_failures} = {red_after}s): nginx would stop "
            f"accepting while the pod still counts as ready; raise kubernetes.prestop_sleep to "
            f"at least {red_after} or probe more often")
    t = timings(loaded, plan.server.graceful_timeout)
    needed = t.app_term_at + t.graceful_timeout + STOP_MARGIN_MIN
    if t.termination_grace_period < needed:
        out.append(
            f"{f}: kubernetes.termination_grace_period = {t.termination_grace_period} leaves no "
            f"time for server.graceful_timeout = {plan.server.graceful_timeout:g}: the server "
            f"gets SIGTERM after kubernetes.prestop_sleep = {k.prestop_sleep} + "
            f"kubernetes.app_stop_delay = {k.app_stop_delay} = {t.app_term_at}s, so the "
            f"kubelet's SIGKILL would cut requests still finishing; set "
            f"kubernetes.termination_grace_period to at least {needed} (or leave it unset: "
            f"derived), or lower server.graceful_timeout to at most "
            f"{t.termination_grace_period - t.app_term_at - STOP_MARGIN_MIN}")
    return out


def _ports(loaded: Loaded, plan: Plan) -> list[str]:
    """The pod's containers share one network namespace: nginx's port must be its own."""
    f, k, m = loaded.path, loaded.settings.kubernetes, loaded.settings.metrics
    used: dict[str, int] = {}
    if plan.metrics is not None:
        used["metrics.bind"] = plan.metrics.server_port
        if plan.metrics.nginx_status_listen:
            used["metrics.nginx_status_port"] = m.nginx_status_port
    return [f"{f}: kubernetes.nginx_port = {k.nginx_port} collides with {key} (port {port}) in "
            f"the pod, whose containers share one network; choose another kubernetes.nginx_port"
            for key, port in used.items() if port == k.nginx_port]


def _resources(loaded: Loaded) -> list[str]:
    f, k, c = loaded.path, loaded.settings.kubernetes, loaded.settings.compose
    out = []
    containers: tuple[tuple[str, ContainerResources, float | None, int | None], ...] = (
        ("app", k.resources.app, c.app_cpus, c.app_memory),
        ("nginx", k.resources.nginx, c.nginx_cpus, c.nginx_memory))
    for name, own, compose_cpus, compose_memory in containers:
        key = f"kubernetes.resources.{name}"
        for kind, request, limit, compose_key in (
                ("cpu", own.cpu_request, own.cpu_limit, f"compose.{name}_cpus"),
                ("memory", own.memory_request, own.memory_limit, f"compose.{name}_memory")):
            effective = limit if limit is not None else (
                compose_cpus if kind == "cpu" else compose_memory)
            if request is None or effective is None or request <= effective:
                continue
            source = f"{key}.{kind}_limit" if limit is not None else f"{compose_key} (the " \
                f"default of {key}.{kind}_limit)"
            out.append(f"{f}: {key}.{kind}_request = {request} exceeds {source} = {effective}: "
                       f"Kubernetes refuses a request above the limit; lower the request or "
                       f"raise the limit")
        if k.autoscaling.enabled and own.cpu_request is None:
            out.append(f"{f}: kubernetes.autoscaling.enabled = true needs {key}.cpu_request: the "
                       f"autoscaler measures CPU use against every container's request and does "
                       f"nothing without one; set {key}.cpu_request (e.g. 0.25) or "
                       f"kubernetes.autoscaling.enabled = false")
    return out


def _budget(loaded: Loaded) -> list[str]:
    """A budget no eviction can meet blocks every node drain for good."""
    f, k = loaded.path, loaded.settings.kubernetes
    b = k.disruption_budget
    pods, pods_key = ((k.autoscaling.min_replicas, "kubernetes.autoscaling.min_replicas")
                      if k.autoscaling.enabled else (k.replicas, "kubernetes.replicas"))
    if b.min_available is not None:
        blocked = b.min_available == "100%" or (
            isinstance(b.min_available, int) and b.min_available >= pods)
        shown = f"kubernetes.disruption_budget.min_available = {b.min_available!r}"
    elif b.max_unavailable is not None:
        blocked = b.max_unavailable in (0, "0%")
        shown = f"kubernetes.disruption_budget.max_unavailable = {b.max_unavailable!r}"
    else:
        return []
    if not blocked or pods == 0:
        return []
    return [f"{f}: {shown} with {pods_key} = {pods} lets no pod be evicted: every node drain "
            f"would wait for ever; allow one pod down (max_unavailable = 1) or run more pods"]


def _ingress_host(loaded: Loaded) -> list[str]:
    f, s = loaded.path, loaded.settings
    ing = s.kubernetes.ingress
    names = s.nginx.server_names
    if not ing.enabled or not names:
        return []
    if ing.host and any(_serves(name, ing.host) for name in names):
        return []
    host = f"kubernetes.ingress.host = {ing.host!r}" if ing.host else \
        'kubernetes.ingress.host = "" (every host)'
    return [f"{f}: {host} is not among nginx.server_names = {names}: the pod's nginx drops "
            f"requests for other hosts (444); set kubernetes.ingress.host to one of them or add "
            f"it to nginx.server_names"]


def _serves(name: str, host: str) -> bool:
    """Whether nginx's ``server_name`` entry ``name`` matches ``host`` (exact, *.x, .x, x.*)."""
    if name == host:
        return True
    if name.startswith("*."):
        return host.endswith(name[1:]) and not host.startswith("*.")
    if name.startswith("."):
        return host == name[1:] or (host.endswith(name) and not host.startswith("*."))
    if name.endswith(".*"):
        return host.startswith(name[:-1])
    return False
