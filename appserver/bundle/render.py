"""Rendering ``templates/`` into the generated files, and finding the stale ones.

Jinja runs with ``StrictUndefined``: a template that names a value the plan does not hold fails
the render instead of printing an empty string into nginx.conf.  Every generated file starts with
the plan's "generated from settings.toml; do not edit" line (the templates print it first).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from appserver.bundle import kubernetes as K
from appserver.bundle import plan as P
from appserver.bundle.crosscheck import cross_check, cross_check_warnings
from appserver.bundle.loading import Loaded
from appserver.bundle.settings import SettingsError
from appserver.bundle.systemd import render_systemd
from appserver.bundle.values import format_size
from appserver.config import setting_as_toml

DOCKER_FILES = {
    P.NGINX_CONF: "nginx.conf.j2",
    P.NGINX_DOCKERFILE: "nginx.Dockerfile.j2",
    P.APP_DOCKERFILE: "app.Dockerfile.j2",
    P.COMPOSE_FILE: "compose.yaml.j2",
    P.SERVER_CONFIG: "appserver.toml.j2",
    P.PROMETHEUS_CONFIG: "prometheus.yml.j2",
    P.ALERT_RULES: "alerts.yml.j2",
    P.REDIS_DOCKERFILE: "redis.Dockerfile.j2",
    P.MONITORING_DOCKERFILE: "monitoring.Dockerfile.j2",
}
LOCAL_FILES = {"nginx.conf": "nginx.conf.j2", "appserver.toml": "appserver.toml.j2",
               "prometheus.yml": "prometheus.yml.j2", "alerts.yml": "alerts.yml.j2"}


def templates_dir() -> Path:
    """``templates/`` of a source checkout, else the copy installed as package data."""
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if (checkout / "nginx.conf.j2").is_file():
        return checkout
    installed = resources.files("appserver.bundle") / "templates"
    return Path(str(installed))


def _toml(value: Any, key: str = "") -> str:
    if key:
        # The server's own writer: octal modes and sizes read back as what they were.
        return setting_as_toml(key, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _yaml(value: Any) -> str:
    """JSON is YAML: quoting every scalar this way cannot be misread (no "no" -> false); "$"
    is doubled because compose interpolates variables in every string."""
    return json.dumps(value).replace("$", "$$")


@functools.lru_cache(maxsize=4)
def environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # config files, not HTML
    )
    env.filters["toml"] = _toml
    env.filters["yaml"] = _yaml
    env.filters["yaml_interpolated"] = json.dumps  # keeps compose's ${VAR:-default}
    env.filters["json"] = json.dumps  # Kubernetes manifests: no interpolation, "$" stays
    env.filters["size"] = format_size
    env.globals.update(
        app_user=P.APP_USER, app_uid=P.APP_UID, nginx_user=P.NGINX_USER, nginx_uid=P.NGINX_UID,
        venv=P.VENV, app_dir=P.DOCKER_APP_DIR, static_dir=P.DOCKER_STATIC_DIR,
        socket_volume=P.SOCKET_VOLUME, http_port_env=P.HTTP_PORT_ENV,
        https_port_env=P.HTTPS_PORT_ENV,
    )
    return env


def render_files(loaded: Loaded, plan: P.Plan, files: Mapping[str, str],
                 template_dir: Path | None = None, **context: Any) -> dict[str, str]:
    env = environment(template_dir or templates_dir())
    out = {}
    for name, template in files.items():
        try:
            text = env.get_template(template).render(settings=loaded.settings, plan=plan,
                                                     **context)
        except jinja2.TemplateError as exc:
            raise SettingsError(f"{template}: cannot render: {exc}") from exc
        out[name] = text.rstrip("\n") + "\n"
    return out


def checked_plans(loaded: Loaded, out_dir: Path | None = None,
                  run_dir: Path | None = None) -> tuple[P.Plan, P.Plan]:
    """Both targets' plans, or :class:`SettingsError` listing every cross-check failure."""
    docker = P.docker_plan(loaded, out_dir)
    local = P.local_plan(loaded, run_dir or loaded.run_dir)
    problems = cross_check(loaded, [docker, local])
    if problems:
        raise SettingsError("\n".join(problems))
    return docker, local


def render_warnings(loaded: Loaded) -> list[str]:
    """Both targets' cross-check warnings: printed by render, check and up, which go on."""
    return cross_check_warnings(
        loaded, [P.docker_plan(loaded), P.local_plan(loaded, loaded.run_dir)])


def render_docker(loaded: Loaded, out_dir: Path | None = None) -> dict[str, str]:
    """The committed files: nginx.conf, the Dockerfiles, compose.yaml, the server config, and
    the Kubernetes manifests (deploy/kubernetes/) and the systemd units (deploy/systemd/)."""
    docker, _ = checked_plans(loaded, out_dir)
    rendered = render_files(loaded, docker, DOCKER_FILES)
    return {**rendered, **render_kubernetes(loaded, docker, rendered[P.SERVER_CONFIG]),
            **render_systemd(loaded, environment(templates_dir()))}  # deploy/systemd/


def render_kubernetes(loaded: Loaded, docker: P.Plan, server_config: str) -> dict[str, str]:
    """deploy/kubernetes/: the pod's nginx.conf and the server's config in a ConfigMap, and the
    manifests (:mod:`appserver.bundle.kubernetes` computes their values)."""
    pod_loaded, pod_plan = K.pod_nginx(loaded, docker)
    nginx_conf = render_files(pod_loaded, pod_plan, {"nginx.conf": "nginx.conf.j2"})
    kube = K.kubernetes_plan(loaded, docker, {**nginx_conf, "appserver.toml": server_config})
    return render_files(loaded, docker, kube.files, kube=kube)


def render_local(loaded: Loaded, run_dir: Path, *, port: int | None = None,
                 tls_port: int | None = None) -> tuple[P.Plan, dict[str, str]]:
    """nginx.conf and appserver.toml for the local stack, all paths under ``run_dir``."""
    checked_plans(loaded, run_dir=run_dir)
    local = P.local_plan(loaded, run_dir, port=port, tls_port=tls_port)
    return local, render_files(loaded, local, LOCAL_FILES)


def write_files(out_dir: Path, rendered: Mapping[str, str]) -> list[Path]:
    """Write what changed (an unchanged file keeps its mtime); return the paths written."""
    written = []
    for name, text in rendered.items():
        path = out_dir / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


@dataclass(frozen=True)
class Stale:
    path: Path
    diff: str


def stale_files(out_dir: Path, rendered: Mapping[str, str]) -> list[Stale]:
    """Files on disk that differ from a fresh render, each with a unified diff."""
    stale = []
    for name, text in rendered.items():
        path = out_dir / name
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current == text:
            continue
        label = f"{name} (missing)" if not path.is_file() else name
        diff = "".join(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"a/{label}", tofile=f"b/{name} (fresh render)"))
        stale.append(Stale(path, diff))
    return stale
