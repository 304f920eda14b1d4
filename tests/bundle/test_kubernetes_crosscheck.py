"""``[kubernetes]`` settings and cross-checks: each timing rule of the pod's shutdown, and every
other mismatch, fails the render with a line naming both values; derived values always pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from appserver.bundle import plan as P
from appserver.bundle.crosscheck import cross_check, cross_check_warnings
from appserver.bundle.loading import Loaded
from appserver.bundle.render import render_docker
from appserver.bundle.settings import SettingsError

Project = Callable[..., Loaded]
Edit = Callable[[dict[str, Any]], None]


def problems(loaded: Loaded) -> list[str]:
    return cross_check(loaded, [P.docker_plan(loaded),
                                P.local_plan(loaded, loaded.directory / "run")])


def kube(**values: Any) -> Edit:
    """An edit that merges ``values`` into [kubernetes] (nested tables as dicts)."""

    def edit(data: dict[str, Any]) -> None:
        table = data.setdefault("kubernetes", {})
        for key, value in values.items():
            if isinstance(value, dict):
                table.setdefault(key, {}).update(value)
            else:
                table[key] = value

    return edit


def only_problem(project: Project, edit: Edit, source: str = "kubernetes_maximal.toml") -> str:
    loaded = project(source, edit)
    found = problems(loaded)
    assert len(found) == 1, found
    assert found[0].startswith(f"{loaded.path}: ")
    with pytest.raises(SettingsError) as info:
        render_docker(loaded)
    assert found[0] in str(info.value)
    return found[0]


@pytest.mark.parametrize("source", ["kubernetes_minimal.toml", "kubernetes_maximal.toml",
                                    "kubernetes_redis.toml", "maximal.toml", "bare.toml"])
def test_sample_settings_agree(project: Project, source: str) -> None:
    assert problems(project(source)) == []


def test_derived_grace_period_fits_any_graceful_timeout(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["graceful_timeout"] = 600
        del data["kubernetes"]["termination_grace_period"]

    assert problems(project("kubernetes_maximal.toml", edit)) == []


# ---- the shutdown timings ---------------------------------------------------------------------


def test_prestop_sleep_shorter_than_readiness_turning_red(project: Project) -> None:
    # readiness_period 3 x readiness_failures 3 = 9s in the maximal file.
    line = only_problem(project, kube(prestop_sleep=8))
    assert "kubernetes.prestop_sleep = 8" in line
    assert "readiness_period = 3" in line and "readiness_failures = 3" in line
    assert "at least 9" in line
    assert only_problem(project, kube(probes={"readiness_period": 10}, prestop_sleep=15))


def test_graceful_timeout_must_fit_in_the_grace_period(project: Project) -> None:
    # SIGTERM at 15 + 3 = 18s; graceful_timeout 20 + 2 -> needs 40, and 39 is one short.
    line = only_problem(project, kube(termination_grace_period=39))
    assert "kubernetes.termination_grace_period = 39" in line
    assert "server.graceful_timeout = 20" in line
    assert "prestop_sleep = 15" in line and "app_stop_delay = 3" in line
    assert "at least 40" in line
    assert problems(project("kubernetes_maximal.toml", kube(termination_grace_period=40))) == []


def test_a_longer_graceful_timeout_breaks_an_explicit_grace_period(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["graceful_timeout"] = 45

    line = only_problem(project, edit)
    assert "server.graceful_timeout = 45" in line
    assert "kubernetes.termination_grace_period = 60" in line


def test_longer_app_stop_delay_needs_a_longer_grace_period(project: Project) -> None:
    line = only_problem(project, kube(app_stop_delay=30))
    assert "kubernetes.app_stop_delay = 30" in line and "= 45s" in line


# ---- the rest -------------------------------------------------------------------------------


def test_nginx_port_collides_with_the_metrics_listener(project: Project) -> None:
    line = only_problem(project, kube(nginx_port=9101))
    assert "kubernetes.nginx_port = 9101 collides with metrics.bind" in line


def test_request_above_limit(project: Project) -> None:
    line = only_problem(project, kube(resources={"app": {"memory_request": "1g",
                                                         "memory_limit": "768m"}}))
    assert "kubernetes.resources.app.memory_request" in line
    assert "kubernetes.resources.app.memory_limit = 805306368" in line


def test_request_above_the_compose_limit_it_defaults_to(project: Project) -> None:
    line = only_problem(project, kube(resources={"app": {"cpu_request": 3.0}}))
    assert "compose.app_cpus (the default of kubernetes.resources.app.cpu_limit) = 2.0" in line


def test_autoscaling_needs_cpu_requests(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["kubernetes"] = {"resources": {"nginx": {"memory_request": "32m"}}}

    line = only_problem(project, edit, "kubernetes_minimal.toml")
    assert "kubernetes.resources.nginx.cpu_request" in line and "autoscal" in line


@pytest.mark.parametrize("budget", [{"min_available": 4}, {"min_available": "100%"},
                                    {"max_unavailable": 0}])
def test_budget_that_blocks_every_drain(project: Project, budget: dict[str, Any]) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["kubernetes"]["disruption_budget"] = budget

    line = only_problem(project, edit)
    assert "kubernetes.replicas = 4" in line and "no pod be evicted" in line


def test_ingress_host_must_be_a_server_name(project: Project) -> None:
    line = only_problem(project, kube(ingress={"host": "shop.example.net"}))
    assert "kubernetes.ingress.host = 'shop.example.net'" in line
    assert "nginx.server_names" in line
    # "*.example.com" serves any subdomain.
    assert problems(project("kubernetes_maximal.toml",
                            kube(ingress={"host": "a.b.example.com"}))) == []


def test_project_name_that_is_no_dns_label(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["compose"] = {"project_name": "9lives"}

    line = only_problem(project, edit, "kubernetes_minimal.toml")
    assert "compose.project_name = '9lives'" in line and "set kubernetes.name" in line


def test_no_kubernetes_warnings_for_compose_users(project: Project) -> None:
    """nginx.tls on (compose's HTTPS) is no Kubernetes matter: nothing printed for it."""
    loaded = project("maximal.toml")
    assert cross_check_warnings(loaded, [P.docker_plan(loaded)]) == []


# ---- settings errors name key, value and fix ------------------------------------------------


@pytest.mark.parametrize(("edit", "expected"), [
    (kube(replicas=3, autoscaling={"enabled": True}),
     "replicas = 3 is set, but kubernetes.autoscaling.enabled = true"),
    (kube(autoscaling={"enabled": True, "min_replicas": 5, "max_replicas": 3}),
     "max_replicas = 3 is below min_replicas = 5"),
    (kube(disruption_budget={"max_unavailable": 1}),
     "min_available = '50%' and max_unavailable = 1 are both set"),
    (kube(nginx_port=80), "kubernetes.nginx_port = 80"),
    (kube(ingress={"host": "", "tls_secret": "x"}), "needs a host"),
    (kube(disruption_budget={"min_available": "150%"}), "'150%' is neither a count"),
    (kube(unknown=1), "kubernetes.unknown = 1: unknown key"),
    (kube(resources={"app": {"cpu_request": -1}}),
     "kubernetes.resources.app.cpu_request = -1"),
])
def test_settings_errors(project: Project, edit: Edit, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        project("kubernetes_maximal.toml", edit)
    assert expected in str(info.value)
