"""deploy/kubernetes/: every manifest passes kubernetes-validate in strict mode, kubectl's own
kustomize (Debian 12's 1.20 included) renders the kustomization into exactly the rendered
manifests, golden files for a minimal and a maximal ``[kubernetes]``, and the pod's nginx.conf
passes a real ``nginx -t``.

Regenerate the golden files after an intended change: ``TESTS_REGEN_GOLDEN=1 pytest
tests/bundle/test_kubernetes.py`` (then read the diff).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from appserver.bundle import kubernetes as K
from appserver.bundle import plan as P
from appserver.bundle.loading import Loaded, load_settings
from appserver.bundle.render import render_docker, write_files
from appserver.bundle.tools import nginx_test_kubernetes

from .conftest import DATA, REPO

Project = Callable[..., Loaded]
# Kubernetes releases current in December 2026: 1.35-1.37 upstream, 1.33-1.34 in the cloud
# providers' extended support (docs/kubernetes.md says the same).
VERSIONS = ["1.33", "1.34", "1.35", "1.36", "1.37"]
SOURCES = ["kubernetes_minimal.toml", "kubernetes_maximal.toml", "kubernetes_redis.toml"]
GOLDEN = DATA / "kubernetes"
HASH = re.compile(r"-config-[0-9a-f]{10}\b")


def manifests(rendered: dict[str, str]) -> dict[str, str]:
    return {name.removeprefix(K.OUT_DIR + "/"): text for name, text in rendered.items()
            if name.startswith(K.OUT_DIR + "/")}


def objects(texts: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Parsed YAML documents keyed by (kind, name): the comparison ignores order and layout."""
    out = {}
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if doc is not None and doc["kind"] != "Kustomization":
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in out, f"{key} twice"
                out[key] = doc
    return out


@pytest.fixture(params=SOURCES)
def rendered(request: pytest.FixtureRequest, project: Project) -> dict[str, str]:
    return manifests(render_docker(project(request.param)))


def test_the_repository_renders_the_whole_set() -> None:
    loaded = load_settings(REPO / "settings.toml")
    files = manifests(render_docker(loaded))
    assert set(files) == {"kustomization.yaml", "configmap.yaml", "deployment.yaml",
                          "service.yaml", "poddisruptionbudget.yaml",
                          "horizontalpodautoscaler.yaml"} | (
        {"redis.yaml"} if loaded.settings.redis.mode == "local" else set())
    kustomization = yaml.safe_load(files["kustomization.yaml"])
    assert kustomization["resources"] == [name for name in files if name != "kustomization.yaml"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_strict_validation(rendered: dict[str, str], version: str) -> None:
    docs = objects([text for name, text in rendered.items() if name != "kustomization.yaml"])
    assert len(docs) >= 5
    for key, doc in docs.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key} against Kubernetes {version}: {exc.caught}")


def test_strict_validation_catches_an_unknown_field(project: Project) -> None:
    """The validator is not a rubber stamp: a misspelt field fails in strict mode."""
    deployment = yaml.safe_load(manifests(render_docker(project("kubernetes_minimal.toml")))[
        "deployment.yaml"])
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def kubectls() -> list[str]:
    """Every kubectl to try: $TESTS_KUBECTL (e.g. Debian 12's 1.20 unpacked beside another
    kubectl) and the one on PATH (run-tests installs Debian's kubernetes-client when none is)."""
    extra = os.environ.get("TESTS_KUBECTL", "")
    if extra and not os.access(extra, os.X_OK):
        pytest.fail(f"TESTS_KUBECTL={extra}: not an executable file")
    return list(dict.fromkeys(path for path in (extra, shutil.which("kubectl")) if path))


@pytest.mark.parametrize("source", SOURCES)
def test_kubectl_kustomize_gives_the_rendered_manifests(project: Project, tmp_path: Path,
                                                        source: str) -> None:
    found = kubectls()
    if not found:
        pytest.skip("kubectl is not installed (Debian: apt-get install kubernetes-client)")
    files = manifests(render_docker(project(source)))
    out = tmp_path / "kubernetes"
    write_files(out, files)
    expected = objects([text for name, text in files.items() if name != "kustomization.yaml"])
    for kubectl in found:
        version = subprocess.run([kubectl, "version", "--client"], capture_output=True,
                                 text=True, timeout=60).stdout.strip().splitlines()[:1]
        result = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"{kubectl} ({version}): {result.stderr}"
        assert objects([result.stdout]) == expected, f"{kubectl} ({version})"


@pytest.mark.parametrize("source", SOURCES)
def test_golden(project: Project, source: str) -> None:
    """Every manifest but the ConfigMap (nginx.conf's own tests cover its text), with the
    ConfigMap's content hash masked."""
    files = manifests(render_docker(project(source)))
    golden = GOLDEN / source.removesuffix(".toml").removeprefix("kubernetes_")
    actual = {name: HASH.sub("-config-HASH", text) for name, text in files.items()
              if name != "configmap.yaml"}
    if os.environ.get("TESTS_REGEN_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        write_files(golden, actual)
    on_disk = {path.name: path.read_text() for path in golden.iterdir()}
    assert on_disk == actual


def test_maximal_values_reach_the_manifests(project: Project) -> None:
    docs = objects(list(manifests(render_docker(project("kubernetes_maximal.toml"))).values()))
    deployment = docs[("Deployment", "shop")]
    assert deployment["metadata"]["namespace"] == "shop-prod"
    assert deployment["spec"]["replicas"] == 4
    assert ("HorizontalPodAutoscaler", "shop") not in docs
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    nginx, app = pod["containers"]
    assert nginx["ports"][0]["containerPort"] == 8000
    probe = nginx["readinessProbe"]
    assert probe["httpGet"]["path"] == "/health/ready"
    # server_names set: the probe names a host nginx serves ("*.example.com" made concrete).
    assert probe["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "probe.example.com"}]
    assert nginx["lifecycle"]["preStop"]["exec"]["command"][-1].endswith("sleep 15")
    assert app["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "18"]
    assert app["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"cpu": "2", "memory": "768Mi"}}
    assert app["ports"] == [{"name": "metrics", "containerPort": 9101, "protocol": "TCP"}]
    ingress = docs[("Ingress", "shop")]
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert docs[("PodDisruptionBudget", "shop")]["spec"]["minAvailable"] == "50%"
    # [redis] mode = "url": the app gets the URL, and no Redis of its own.
    assert app["env"] == [{"name": "APPSERVER_REDIS_URL",
                           "value": "redis://redis.shop-prod.svc:6379/0"}]
    assert not [key for key in docs if "redis" in key[1]]


def test_local_redis_is_its_own_deployment(project: Project) -> None:
    loaded = project("kubernetes_minimal.toml", lambda data: data.update(redis={"mode": "local"}))
    docs = objects(list(manifests(render_docker(loaded)).values()))
    redis = docs[("Deployment", "appserver-redis")]["spec"]
    assert redis["replicas"] == 1 and redis["strategy"] == {"type": "Recreate"}
    (container,) = redis["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert docs[("Service", "appserver-redis")]["spec"]["ports"][0]["port"] == 6379
    # Only the app pods may reach it.
    policy = docs[("NetworkPolicy", "appserver-redis")]["spec"]
    (rule,) = policy["ingress"]
    app_selector = docs[("Deployment", "appserver")]["spec"]["selector"]["matchLabels"]
    assert rule["from"] == [{"podSelector": {"matchLabels": app_selector}}]
    pod = docs[("Deployment", "appserver")]["spec"]["template"]["spec"]
    assert pod["containers"][1]["env"] == [{"name": "APPSERVER_REDIS_URL",
                                            "value": "redis://appserver-redis:6379/0"}]


def test_minimal_defaults(project: Project) -> None:
    docs = objects(list(manifests(render_docker(project("kubernetes_minimal.toml"))).values()))
    # compose.project_name's default names everything; the autoscaler owns the replica count.
    deployment = docs[("Deployment", "appserver")]
    assert "replicas" not in deployment["spec"]
    assert docs[("HorizontalPodAutoscaler", "appserver")]["spec"]["minReplicas"] == 2
    assert docs[("PodDisruptionBudget", "appserver")]["spec"]["maxUnavailable"] == 1
    pod = deployment["spec"]["template"]["spec"]
    # graceful_timeout 30 (the server's default) + preStop 10 + delay 5 + margin 5.
    assert pod["terminationGracePeriodSeconds"] == 50
    assert [c["image"] for c in pod["containers"]] == ["appserver-nginx:latest",
                                                       "appserver-app:latest"]
    assert ("Ingress", "appserver") not in docs


def test_security_context_everywhere(rendered: dict[str, str]) -> None:
    docs = objects(list(rendered.values()))
    deployments = [doc for (kind, _), doc in docs.items() if kind == "Deployment"]
    uids = {}
    for deployment in deployments:  # the app's, and Redis's when it runs one
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsUser"] > 0
            uids[container["name"]] = sc["runAsUser"]
            # Everything a container writes is an emptyDir (or a ConfigMap it only reads).
            for mount in container["volumeMounts"]:
                volume = volumes[mount["name"]]
                assert "emptyDir" in volume or mount.get("readOnly") is True, mount
    # The uids of compose's images.
    assert (uids["nginx"], uids["app"]) == (P.NGINX_UID, P.APP_UID)


def test_configmap_holds_the_pod_configs(project: Project) -> None:
    loaded = project("kubernetes_maximal.toml")
    rendered = render_docker(loaded)
    (configmap,) = objects([manifests(rendered)["configmap.yaml"]]).values()
    data = configmap["data"]
    assert data["appserver.toml"] == rendered[P.SERVER_CONFIG]  # the docker target's, as it is
    conf = data["nginx.conf"]
    assert "listen 8000;" in conf and "ssl" not in conf.replace("ssl_", "")
    assert not re.search(r"^user ", conf, re.M)  # nginx starts as www-data: no root master
    assert f"if (-f {K.DRAIN_FILE})" in conf
    assert f"pid {K.NGINX_RUN_DIR}/nginx.pid;" in conf
    # A changed config is a new ConfigMap name (a rolling update).
    other = project("kubernetes_maximal.toml",
                    lambda data: data["nginx"].update(client_max_body_size="20m"))
    ((_, changed_name),) = objects([manifests(render_docker(other))["configmap.yaml"]])
    assert changed_name != configmap["metadata"]["name"]


@pytest.mark.parametrize("source", SOURCES)
def test_pod_nginx_conf_passes_nginx_t(project: Project, nginx: str, source: str) -> None:
    result = nginx_test_kubernetes(project(source), nginx)
    assert result.ok, result.output


def test_committed_manifests_are_the_repositorys(tmp_path: Path) -> None:
    """deploy/kubernetes/ in the repository is what settings.toml renders (render --check)."""
    rendered = manifests(render_docker(load_settings(REPO / "settings.toml")))
    for name, text in rendered.items():
        assert (REPO / K.OUT_DIR / name).read_text() == text, name
