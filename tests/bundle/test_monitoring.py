"""``[metrics]``: settings, the rendered nginx status server, prometheus.yml and alerts.yml (checked
by promtool, the alert rules unit-tested with ``promtool test rules``), and the cross-checks that
keep every monitoring listener off the public server block.

The end-to-end run (a real Prometheus scraping ``appserver up``) is test_monitoring_stack.py.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle import plan as P
from appserver.bundle import tools
from appserver.bundle.crosscheck import cross_check
from appserver.bundle.loading import Loaded, validate_settings
from appserver.bundle.render import render_docker, render_local, write_files
from appserver.bundle.settings import SettingsError
from appserver.config import load_config
from appserver.testing.stack import load_stack_settings

from .conftest import REPO
from .test_render import run_command

Project = Callable[..., Loaded]
FILE = Path("/srv/project/settings.toml")

def error_for(metrics: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as info:
        validate_settings({"app": {"module": "myapp:application"}, "metrics": metrics}, FILE)
    return str(info.value)


def metrics_on(**values: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["metrics"] = {"enabled": True, **values}
    return edit


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; ./run-tests does)")
    return found


def run_promtool(promtool: str, *args: str) -> str:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                          check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


# ---- settings -----------------------------------------------------------------------------------


def test_metrics_are_off_by_default() -> None:
    loaded = validate_settings({"app": {"module": "myapp:application"}}, FILE)
    m = loaded.settings.metrics
    assert (m.enabled, m.bind, m.nginx_status) == (False, "127.0.0.1:9101", True)


@pytest.mark.parametrize(("bind", "says"), [
    ("0.0.0.0:9101", "HOST must be a loopback address (127.0.0.1, [::1], localhost), e.g. "
                     '"127.0.0.1:9101"'),
    ("10.0.0.5:9101", "the metrics must stay inside the deployment"),
    ("unix:/run/metrics.sock", "Prometheus scrapes TCP only"),
    ("9101", "is not HOST:PORT"),
    ("127.0.0.1:70000", "is not HOST:PORT with a port 1-65535"),
])
def test_bad_bind_names_key_value_and_fix(bind: str, says: str) -> None:
    message = error_for({"enabled": True, "bind": bind})
    assert f"{FILE}: metrics.bind = {bind!r}: " in message
    assert says in message
    assert "(allowed: HOST:PORT of the server's metrics listener" in message


def test_unknown_metrics_key() -> None:
    message = error_for({"enable": True})
    assert "metrics.enable = True: unknown key; did you mean 'enabled'?" in message
    assert "allowed in [metrics]: enabled, bind, nginx_status" in message


def test_metrics_ports_must_differ() -> None:
    message = error_for({"bind": "127.0.0.1:9200", "nginx_exporter_port": 9200})
    assert "metrics.bind and metrics.nginx_exporter_port both use port 9200" in message


def test_metrics_bind_in_the_server_table_is_refused() -> None:
    with pytest.raises(SettingsError) as info:
        validate_settings({"app": {"module": "myapp:application"},
                           "server": {"metrics_bind": "127.0.0.1:9101"}}, FILE)
    assert "server.metrics_bind = '127.0.0.1:9101': not allowed here; set metrics.enabled = " \
        "true (and metrics.bind) instead" in str(info.value)


def test_the_repository_settings_document_metrics() -> None:
    text = (REPO / "settings.toml").read_text()
    assert "\n[metrics]\n" in text
    for key in ("enabled", "bind", "nginx_status", "nginx_status_port", "nginx_exporter_port",
                "scrape_interval", "alert_5xx_ratio"):
        assert f"\n{key} = " in text, key


# ---- rendering: off -------------------------------------------------------------------------------


def test_off_renders_no_listener(project: Project, tmp_path: Path) -> None:
    loaded = project("maximal.toml")
    files = render_docker(loaded)
    assert "stub_status" not in files[P.NGINX_CONF]
    assert "metrics_bind" not in files[P.SERVER_CONFIG]
    assert "expose:" not in files[P.COMPOSE_FILE]
    assert "scrape_configs: []" in files[P.PROMETHEUS_CONFIG]
    assert "metrics.enabled = false" in files[P.PROMETHEUS_CONFIG]
    local = render_local(loaded, tmp_path / "run")[1]
    assert "stub_status" not in local["nginx.conf"] and "metrics_bind" not in local["appserver.toml"]


def test_off_files_pass_promtool(project: Project, promtool: str) -> None:
    loaded = project("bare.toml")
    write_files(loaded.directory, render_docker(loaded))
    out = run_promtool(promtool, "check", "config", str(loaded.directory / P.PROMETHEUS_CONFIG))
    assert "SUCCESS" in out


@pytest.mark.parametrize("source", ["settings.toml", "settings.asgi.toml"])
def test_committed_prometheus_files_pass_promtool(source: str, promtool: str) -> None:
    out_dir = REPO if source == "settings.toml" else REPO / "deploy" / "asgi"
    config = out_dir / P.PROMETHEUS_CONFIG
    assert config.is_file(), f"{config} is missing: run `appserver render`"
    run_promtool(promtool, "check", "config", str(config))
    run_promtool(promtool, "check", "rules", str(out_dir / P.ALERT_RULES))


# ---- rendering: on --------------------------------------------------------------------------------


def test_on_renders_loopback_stub_status_and_a_private_listener(project: Project,
                                                               tmp_path: Path) -> None:
    loaded = project("maximal.toml", metrics_on(nginx_status_port=8090))
    files = render_docker(loaded)
    nginx = files[P.NGINX_CONF]
    status = nginx[nginx.index("    # nginx's own numbers"):]
    assert [line.strip() for line in status.splitlines()[3:13]] == [
        "server {", "listen 127.0.0.1:8090;", "access_log off;", "",
        "location = /stub_status {", "stub_status;", "allow 127.0.0.1;", "deny all;", "}", ""]
    # stub_status appears in that server only; the public server blocks never proxy elsewhere
    # than the app's unix socket.
    assert nginx.count("stub_status;") == 1
    assert nginx.count("server unix:/run/appserver/app.sock;") == 2  # app and app_websocket
    assert "9101" not in nginx
    assert 'metrics_bind = "0.0.0.0:9101"' in files[P.SERVER_CONFIG]
    compose = files[P.COMPOSE_FILE]
    assert 'expose:\n      - "9101"' in compose
    assert "9101" not in compose.split("  nginx:")[1]  # nothing published for it
    prometheus = files[P.PROMETHEUS_CONFIG]
    assert 'targets: ["app:9101"]' in prometheus and 'targets: ["nginx:9113"]' in prometheus
    # Locally: the loopback addresses the settings name.
    plan, local = render_local(loaded, tmp_path / "run")
    assert 'metrics_bind = "127.0.0.1:9101"' in local["appserver.toml"]
    assert 'targets: ["127.0.0.1:9101"]' in local["prometheus.yml"]
    assert 'targets: ["127.0.0.1:9113"]' in local["prometheus.yml"]
    path = tmp_path / "appserver.toml"
    path.write_text(local["appserver.toml"])
    assert load_config(settings_file=str(path), environ={}).metrics_bind == \
        "127.0.0.1:9101"


def test_nginx_status_can_be_left_out(project: Project) -> None:
    files = render_docker(project("maximal.toml", metrics_on(nginx_status=False)))
    assert "stub_status" not in files[P.NGINX_CONF]
    assert "job_name: nginx" not in files[P.PROMETHEUS_CONFIG]
    assert "NginxDown" not in files[P.ALERT_RULES]
    assert "job_name: appserver" in files[P.PROMETHEUS_CONFIG]


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_on_files_pass_nginx_t_and_promtool(project: Project, tmp_path: Path, nginx: str,
                                            promtool: str, source: str) -> None:
    loaded = project(source, metrics_on(scrape_interval=5, alert_5xx_ratio=0.1))
    result = tools.nginx_test_docker(loaded, nginx)
    assert result.ok, result.output
    write_files(loaded.directory, render_docker(loaded))
    out = run_promtool(promtool, "check", "config", str(loaded.directory / P.PROMETHEUS_CONFIG))
    assert "SUCCESS: 1 rule files found" in out
    run = tmp_path / "run"
    (run / "tmp").mkdir(parents=True)
    plan, local = render_local(loaded, run)
    write_files(run, local)
    run_promtool(promtool, "check", "config", str(run / "prometheus.yml"))
    assert tools.nginx_test(nginx, run / "nginx.conf", run).ok
    assert "scrape_interval: 5s" in local["prometheus.yml"]
    assert "> 0.1\n" in local["alerts.yml"]


# ---- cross-checks -----------------------------------------------------------------------------


def test_a_public_location_proxying_to_the_metrics_listener_fails(project: Project) -> None:
    loaded = project("maximal.toml", metrics_on())
    docker = P.docker_plan(loaded)
    local = P.local_plan(loaded, loaded.directory / "run")
    assert cross_check(loaded, [docker, local]) == []
    leaky = dataclasses.replace(local, public_upstreams=("127.0.0.1:9101",))
    [problem] = cross_check(loaded, [leaky])
    assert problem == (
        f"{loaded.path}: metrics.bind = '127.0.0.1:9101' (local): the public server block "
        "proxies to 127.0.0.1:9101, a monitoring listener, so its numbers (and /metrics) would "
        "be public; keep the app's upstream on the unix socket and the monitoring listeners on "
        "ports of their own")
    leaky = dataclasses.replace(docker, public_upstreams=("http://app:9101",))
    assert "the public server block proxies to http://app:9101" in cross_check(loaded, [leaky])[0]


def test_status_port_colliding_with_the_health_server_fails(project: Project) -> None:
    loaded = project("maximal.toml", metrics_on(nginx_status_port=P.HEALTH_PORT))
    problems = cross_check(loaded, [P.docker_plan(loaded)])
    assert problems == [f"{loaded.path}: the health check server = {P.HEALTH_PORT} collides "
                        f"with metrics.nginx_status_port (port {P.HEALTH_PORT}); choose another "
                        "port"]


def test_local_metrics_port_colliding_with_nginx_fails(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        metrics_on(bind="127.0.0.1:9400")(data)
        data["compose"]["published_port"] = 9400

    loaded = project("maximal.toml", edit)
    with pytest.raises(SettingsError) as info:
        render_docker(loaded)
    assert "compose.published_port = 9400 collides with metrics.bind (port 9400)" in \
        str(info.value)


# ---- the alert rules, unit-tested -------------------------------------------------------------

RULE_TESTS = """\
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # 100 requests a minute, 10 of them 5xx: 10% > 5%.
      - series: 'appserver_requests_total{{job="appserver",instance="a",method="GET",status="2xx"}}'
        values: '0+90x20'
      - series: 'appserver_requests_total{{job="appserver",instance="a",method="GET",status="5xx"}}'
        values: '0+10x20'
      - series: 'appserver_worker_restarts_total{{job="appserver",instance="a",reason="timeout"}}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'appserver_worker_restarts_total{{job="appserver",instance="a",reason="killed"}}'
        values: '0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
      - series: 'appserver_listen_queue{{job="appserver",instance="a",listener="unix:/s"}}'
        values: '0+3x20'
      - series: 'appserver_workers{{job="appserver",instance="a",state="running"}}'
        values: '2 2 2 2 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
      - series: 'up{{job="appserver",instance="a"}}'
        values: '1+0x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: AppserverHigh5xxRate
        exp_alerts:
          - exp_labels: {{severity: critical, job: appserver, instance: a}}
            exp_annotations:
              summary: "a: 10% of responses are 5xx"
              description: "The app answers 5xx to more than the allowed share of requests over 5 minutes; see the app server's error log."
      - eval_time: 5m
        alertname: AppserverWorkerTimeouts
        exp_alerts:
          - exp_labels: {{severity: warning, job: appserver, instance: a, reason: timeout}}
            exp_annotations:
              summary: "a: workers killed for exceeding the timeout"
              description: "Timeout restarts in 10 minutes: 1. A request outlived server.timeout; the access and error logs name it."
      - eval_time: 5m
        alertname: AppserverWorkersKilled
        exp_alerts: []
      - eval_time: 12m
        alertname: AppserverListenQueueGrowing
        exp_alerts:
          - exp_labels: {{severity: warning, job: appserver, instance: a, listener: "unix:/s"}}
            exp_annotations:
              summary: "a: listen queue of unix:/s is growing (21)"
              description: "Connections wait longer and longer to be accepted: add workers or threads, or find what makes requests slow."
      - eval_time: 4m
        alertname: AppserverNoWorkers
        exp_alerts: []
      - eval_time: 8m
        alertname: AppserverNoWorkers
        exp_alerts:
          - exp_labels: {{severity: critical, job: appserver, instance: a}}
            exp_annotations:
              summary: "a: no worker is running"
              description: "Every request fails (nginx answers 502); workers may be failing to boot: see the app server's log."
      - eval_time: 10m
        alertname: AppserverDown
        exp_alerts: []
"""


def test_alert_rules_fire_when_they_should(project: Project, tmp_path: Path,
                                           promtool: str) -> None:
    """``promtool test rules`` on the rendered alerts.yml with made-up series: each alert fires on
    its symptom and stays quiet otherwise (renders the same with metrics off, as committed)."""
    loaded = project("bare.toml")
    write_files(tmp_path, render_docker(loaded))
    rules = tmp_path / P.ALERT_RULES
    tests = tmp_path / "rules_test.yml"
    tests.write_text(RULE_TESTS.format(rules=rules))
    out = run_promtool(promtool, "test", "rules", str(tests))
    assert "SUCCESS" in out


# ---- around the edges ---------------------------------------------------------------------------


def test_check_command_runs_promtool(capsys: pytest.CaptureFixture[str], promtool: str) -> None:
    assert run_command("check", "--settings", str(REPO / "settings.toml")) == 0
    assert "ok: promtool check config (deploy/prometheus.yml and deploy/alerts.yml)" in \
        capsys.readouterr().out


def test_promtool_check_reports_a_bad_rule(promtool: str) -> None:
    result = tools.promtool_check(promtool, "rule_files: [alerts.yml]\n",
                                  "groups:\n  - name: x\n    rules:\n      - alert: A\n"
                                  "        expr: rate(\n")
    assert not result.ok and "alerts.yml" in result.output


def test_the_control_socket_sits_beside_the_apps_socket(project: Project, tmp_path: Path) -> None:
    loaded = project("maximal.toml")
    docker = render_docker(loaded)[P.SERVER_CONFIG]
    assert 'control_socket = "/run/appserver/ctl.sock"' in docker
    local = render_local(loaded, tmp_path / "run")[1]["appserver.toml"]
    assert f'control_socket = "{tmp_path / "run" / "ctl.sock"}"' in local
    # An explicit choice in [server] wins.
    chosen = project("maximal.toml", lambda d: d["server"].update(control_socket_disable=True))
    assert "control_socket =" not in render_docker(chosen)[P.SERVER_CONFIG]


def test_test_stacks_get_free_metrics_ports() -> None:
    """Stacks from one settings file with metrics on run side by side (the pytest fixtures)."""
    first, second = (load_stack_settings(settings_file=REPO / "settings.toml") for _ in range(2))
    assert first.settings.metrics.enabled
    ports = [(s.settings.metrics.port, s.settings.metrics.nginx_status_port,
              s.settings.metrics.nginx_exporter_port) for s in (first, second)]
    assert ports[0] != ports[1] and 9101 not in ports[0]
    assert first.settings.metrics.bind.startswith("127.0.0.1:")
    named = load_stack_settings(settings_file=REPO / "settings.toml",
                                settings={"metrics": {"bind": "127.0.0.1:9999"}})
    assert named.settings.metrics.bind == "127.0.0.1:9999"
    off = load_stack_settings(settings_file=REPO / "settings.toml",
                              settings={"metrics": {"enabled": False}})
    assert off.settings.metrics.bind == "127.0.0.1:9101"  # untouched: nothing binds it
