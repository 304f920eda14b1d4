"""Rendering: committed files are fresh, every branch renders and passes real ``nginx -t``, the
server reads its rendered config, compose accepts compose.yaml, ``render --check`` names stale files."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle import plan as P
from appserver.bundle import tools
from appserver.bundle.commands import register
from appserver.bundle.loading import Loaded, load_settings
from appserver.bundle.render import (
    DOCKER_FILES,
    LOCAL_FILES,
    render_docker,
    render_files,
    render_local,
    stale_files,
    write_files,
)
from appserver.bundle.settings import SettingsError
from appserver.config import load_config

from .conftest import REPO

Project = Callable[..., Loaded]
HEADER = "# generated from settings.toml; do not edit (run `appserver render`)\n"


def run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="appserver")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_committed_files_are_fresh() -> None:
    """The golden test: nginx/nginx.conf, compose.yaml, ... match a render of settings.toml."""
    loaded = load_settings(REPO / "settings.toml")
    stale = stale_files(REPO, render_docker(loaded))
    assert not stale, "stale generated files; run `appserver render`:\n" + "".join(
        item.diff for item in stale)


def test_render_check_command_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command("render", "--check", "--settings", str(REPO / "settings.toml")) == 0
    # Every target's files: compose's, Kubernetes' and systemd's (deploy/systemd/).
    expected = len(render_docker(load_settings(REPO / "settings.toml")))
    assert f"up to date: {expected} files" in capsys.readouterr().out


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_every_generated_file_starts_with_the_header(project: Project, tmp_path: Path,
                                                     source: str) -> None:
    loaded = project(source)
    files = {**render_docker(loaded), **render_local(loaded, tmp_path / "run")[1]}
    # Besides compose's and the local stack's: Kubernetes' (deploy/kubernetes/) and systemd's.
    assert set(files) >= set(DOCKER_FILES) | set(LOCAL_FILES)
    assert {name for name in files if name.startswith("deploy/kubernetes/")}
    for name, text in files.items():
        assert text.startswith(HEADER), name


def test_render_check_names_stale_and_missing_files(project: Project,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    loaded = project("maximal.toml")
    settings = str(loaded.path)
    assert run_command("render", "--settings", settings) == 0
    assert run_command("render", "--check", "--settings", settings) == 0
    conf = loaded.directory / "nginx" / "nginx.conf"
    conf.write_text(conf.read_text().replace("worker_processes 2;", "worker_processes 3;"))
    (loaded.directory / "compose.yaml").unlink()
    capsys.readouterr()
    assert run_command("render", "--check", "--settings", settings) == 1
    out, err = capsys.readouterr()
    assert f"stale: {conf}" in err
    assert f"stale: {loaded.directory / 'compose.yaml'}" in err
    assert "-worker_processes 3;\n+worker_processes 2;" in out
    assert "--- a/compose.yaml (missing)" in out
    # A render repairs both, and rewrites only what changed.
    written = write_files(loaded.directory, render_docker(loaded))
    assert sorted(written) == sorted([conf, loaded.directory / "compose.yaml"])


def test_render_into_another_directory(project: Project, tmp_path: Path) -> None:
    loaded = project("maximal.toml")
    out = loaded.directory / "build" / "out"
    assert run_command("render", "--settings", str(loaded.path), "--out", str(out)) == 0
    compose = (out / "compose.yaml").read_text()
    # Build contexts and mounts still point at the project (the settings file's directory).
    assert 'context: "../.."' in compose
    assert 'dockerfile: "build/out/nginx/Dockerfile"' in compose
    assert '"../../tls/fullchain.pem:/etc/nginx/tls/fullchain.pem:ro"' in compose
    assert "COPY build/out/nginx/nginx.conf /etc/nginx/nginx.conf" in \
        (out / "nginx" / "Dockerfile").read_text()


def test_render_refuses_settings_with_cross_check_failures(
        project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    loaded = project("maximal.toml", lambda d: d["nginx"].update(proxy_read_timeout=10))
    assert run_command("render", "--settings", str(loaded.path)) == 1
    assert "nginx.proxy_read_timeout = 10 is below server.timeout = 60" in capsys.readouterr().err
    assert not (loaded.directory / "nginx" / "nginx.conf").exists()


def test_strict_undefined(project: Project, tmp_path: Path) -> None:
    loaded = project("bare.toml")
    (tmp_path / "bad.j2").write_text("# {{ plan.header }}\n{{ plan.no_such_value }}\n")
    with pytest.raises(SettingsError, match="bad.j2: cannot render: .*no_such_value"):
        render_files(loaded, P.docker_plan(loaded), {"x": "bad.j2"}, template_dir=tmp_path)


# ---- every branch, checked by real nginx -------------------------------------------------------


MAXIMAL_FRAGMENTS = [
    "worker_processes 2;", "worker_rlimit_nofile 8256;", "large_client_header_buffers 8 16k;",
    "client_max_body_size 25m;", "        fd00::/8 1;",  # the trusted proxies' geo
    # trusted_proxy_hops = 2: the second entry from the right, by a map (realip has no count)
    'map "$from_trusted_proxy:$http_x_forwarded_for" $client_addr {',
    r'"~^1:(?:.*,)?\s*(?<forwarded_client>[0-9A-Fa-f.:]+)\s*(?:,[^,]*){1}$" $forwarded_client;',
    r'"~*^1:(?:.*,)?\s*(?<forwarded_scheme>https?)\s*(?:,[^,]*){1}$" $forwarded_scheme;',
    "proxy_set_header X-Forwarded-For $client_addr;", "log_format main '$client_addr - ",
    "gzip_types text/css application/json;",
    "keepalive 64;", "keepalive_timeout 75s;", "proxy_read_timeout 120s;",
    "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_prefer_server_ciphers off;",
    "ssl_ecdh_curve X25519:prime256v1:secp384r1;", "ssl_session_tickets off;",
    "return 444;", "ssl_reject_handshake on;", "listen [::]:8000 default_server;",
    "listen 8443 ssl http2;", "server_name example.com *.example.com .example.org;",
    "return 301 https://$host$request_uri;",  # published_tls_port 443: no port in the URL
    'add_header Strict-Transport-Security "max-age=31536000" always;',
    'add_header Referrer-Policy "no-referrer" always;',
    'add_header Content-Security-Policy "default-src \'self\'; frame-ancestors \'none\'" always;',
    'add_header Permissions-Policy "geolocation=(), camera=()" always;',
    "location ^~ /assets/ {", "expires 7d;", "location ^~ /events/ {", "location ^~ /stream {",
    "proxy_buffering off;", "location = /health/live {", "listen 127.0.0.1:8081;",
    "location ^~ /ws/ {", "proxy_read_timeout 300s;", "proxy_set_header Upgrade $http_upgrade;",
    "proxy_set_header Connection $connection_upgrade;", 'proxy_set_header Connection "";',
    "# Above the server's ping interval (25s)", "upstream app_websocket {",
    "proxy_pass http://$app_upstream;",
]
BARE_FRAGMENTS = [
    "gzip off;", "access_log off;", "proxy_buffering off;", "proxy_request_buffering off;",
    "listen 443 ssl;", "listen 80;", "server_name bare.example;",
    "# nginx is the edge: the scheme is the one the client used.",
]


def test_maximal_renders_every_branch(project: Project) -> None:
    loaded = project("maximal.toml")
    conf = render_docker(loaded)[P.NGINX_CONF]
    for fragment in MAXIMAL_FRAGMENTS:
        assert fragment in conf, fragment
    assert "X-XSS-Protection" not in conf
    assert "server_tokens off;" in conf and "proxy_http_version 1.1;" in conf
    assert "'' '';" in conf  # the upgrade map's empty default keeps upstream keep-alive


def test_bare_renders_the_other_branches(project: Project) -> None:
    conf = render_docker(project("bare.toml"))[P.NGINX_CONF]
    for fragment in BARE_FRAGMENTS:
        assert fragment in conf, fragment
    for absent in ("keepalive 32;", "location ^~ /static/", "return 301", "X-Content-Type-Options",
                   "Referrer-Policy", "Content-Security-Policy", "Strict-Transport-Security",
                   "http2", "set_real_ip_from", "listen [::]", "proxy_set_header Upgrade",
                   "$connection_upgrade", "app_websocket"):
        assert absent not in conf, absent


def test_one_trusted_hop_is_realip_without_recursion(project: Project, nginx: str) -> None:
    # Recursion would skip every trusted address from the right: a trusted client could then
    # name any address.  One hop is the rightmost entry, which realip takes when not recursive.
    loaded = project("maximal.toml", lambda data: data["nginx"].update(trusted_proxy_hops=1))
    conf = render_docker(loaded)[P.NGINX_CONF]
    for fragment in ("set_real_ip_from 10.0.0.0/8;", "set_real_ip_from fd00::/8;",
                     "real_ip_header X-Forwarded-For;", "real_ip_recursive off;",
                     r'"~*^1:(?:.*,)?\s*(?<forwarded_scheme>https?)\s*$" $forwarded_scheme;',
                     "proxy_set_header X-Forwarded-For $remote_addr;"):
        assert fragment in conf, fragment
    assert "real_ip_recursive on" not in conf and "$client_addr" not in conf
    result = tools.nginx_test_docker(loaded, nginx)
    assert result.ok, result.output


def location_blocks(conf: str) -> dict[str, str]:
    """The bodies of the locations that proxy to the app (the static one too), by prefix, in
    order; a location holds no nested block, and the TLS redirect's ``location /`` (no
    proxy_pass) is left out."""
    blocks = {}
    for match in re.finditer(r"location (?:\^~ |= )?(\S+) \{\n(.*?)\n        \}", conf, re.S):
        if "proxy_pass" in match.group(2) or "alias" in match.group(2):
            blocks.setdefault(match.group(1), match.group(2))
    return blocks


def test_websocket_locations_pass_the_upgrade_and_nothing_else_does(project: Project) -> None:
    conf = render_docker(project("maximal.toml"))[P.NGINX_CONF]
    blocks = location_blocks(conf)
    # "/events/" is in both lists: one location, WebSocket and unbuffered; "/" is the catch-all.
    assert list(blocks)[:5] == ["/assets/", "/ws/", "/events/", "/stream", "/"]
    for prefix in ("/ws/", "/events/", "/"):
        body = blocks[prefix]
        for line in ("proxy_read_timeout 300s;", "proxy_set_header Upgrade $http_upgrade;",
                     "proxy_set_header Connection $connection_upgrade;",
                     "proxy_set_header Host $forwarded_host;",  # restated: nginx inherits none
                     "proxy_set_header X-Forwarded-For $client_addr;",
                     "proxy_set_header X-Forwarded-Proto $forwarded_proto;",
                     "proxy_buffering off;"):
            assert line in body, (prefix, line)
    assert "Upgrade" not in blocks["/stream"] and "proxy_buffering off;" in blocks["/stream"]
    assert "proxy_pass http://app;" in blocks["/stream"]
    # Handshakes get a connection of their own (app_websocket, no keepalive); the map sends
    # ordinary requests on WebSocket locations to the kept-alive upstream.
    assert "map $http_upgrade $app_upstream {\n        default app_websocket;\n        '' app;" \
        in conf
    websocket_upstream = conf[conf.index("upstream app_websocket {"):]
    assert "keepalive" not in websocket_upstream[:websocket_upstream.index("}")]
    assert "Upgrade" not in blocks["/health/live"]
    # Outside the WebSocket locations: no Upgrade, and an empty Connection (upstream keep-alive).
    http_level = conf[:conf.index("    server {")]
    assert 'proxy_set_header Connection "";' in http_level and "Upgrade $" not in http_level


def test_repository_config_has_the_chat_location() -> None:
    conf = (REPO / "nginx" / "nginx.conf").read_text()
    body = location_blocks(conf)["/ws/"]
    assert "proxy_set_header Upgrade $http_upgrade;" in body
    assert "proxy_read_timeout 60s;" in body
    assert "Upgrade" not in location_blocks(conf)["/"]
    server = load_settings(REPO / "settings.toml").settings.server
    assert server.worker_class == "gthread" and server.websocket_max_connections < server.threads


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_nginx_accepts_the_docker_config(project: Project, nginx: str, source: str) -> None:
    result = tools.nginx_test_docker(project(source), nginx)
    assert result.ok, result.output


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_nginx_accepts_the_local_config(project: Project, nginx: str, tmp_path: Path,
                                        source: str) -> None:
    loaded = project(source)
    run = tmp_path / "run"
    (run / "tmp").mkdir(parents=True)
    _, files = render_local(loaded, run)
    write_files(run, files)
    result = tools.nginx_test(nginx, run / "nginx.conf", run)
    assert result.ok, result.output


def test_nginx_test_reports_a_broken_config(nginx: str, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp { server { listen 8080; no_such_directive on; } }\n")
    result = tools.nginx_test(nginx, conf, tmp_path)
    assert not result.ok
    assert 'unknown directive "no_such_directive"' in result.output


def test_nginx_test_docker_makes_up_missing_certificates(project: Project, nginx: str) -> None:
    loaded = project("maximal.toml")
    shutil.rmtree(loaded.directory / "tls")
    result = tools.nginx_test_docker(loaded, nginx)
    assert result.ok, result.output
    assert "self-signed pair instead" in result.output


def test_repository_check_command(capsys: pytest.CaptureFixture[str], nginx: str) -> None:
    assert run_command("check", "--settings", str(REPO / "settings.toml")) == 0
    out = capsys.readouterr().out
    assert "is valid and its layers agree" in out
    assert f"ok: nginx -t ({nginx})" in out


def test_check_command_reports_missing_files(project: Project,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    loaded = project("maximal.toml")
    (loaded.directory / "myapp.py").unlink()
    assert run_command("check", "--settings", str(loaded.path)) == 1
    assert "no module 'myapp' in app.directory" in capsys.readouterr().err


# ---- the server's side of the contract ---------------------------------------------------------


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_the_server_reads_its_rendered_config(project: Project, tmp_path: Path,
                                              source: str) -> None:
    loaded = project(source)
    path = tmp_path / "appserver.toml"
    path.write_text(render_docker(loaded)[P.SERVER_CONFIG])
    config = load_config(settings_file=str(path), environ={})
    plan = P.docker_plan(loaded)
    assert config == plan.server
    assert config.bind == ["unix:/run/appserver/app.sock"]
    assert config.wsgi_app == "myapp:application"
    assert config.chdir == P.DOCKER_APP_DIR
    assert config.socket_mode == 0o660


def test_the_local_server_config_binds_under_the_run_dir(project: Project, tmp_path: Path) -> None:
    loaded = project("maximal.toml")
    plan, files = render_local(loaded, tmp_path / "run")
    path = tmp_path / "appserver.toml"
    path.write_text(files["appserver.toml"])
    config = load_config(settings_file=str(path), environ={})
    assert config.bind == [f"unix:{tmp_path / 'run' / 'app.sock'}"]
    assert config.chdir == str(loaded.directory)
    assert config.socket_group is None  # locally nginx runs as the socket's owner
    assert f"server unix:{tmp_path / 'run' / 'app.sock'};" in render_local(
        loaded, tmp_path / "run")[1]["nginx.conf"]


# ---- compose ----------------------------------------------------------------------------------


def test_compose_accepts_the_repository_compose_file(compose: list[str]) -> None:
    result = tools.compose_config(compose, REPO / "compose.yaml", REPO)
    assert result.ok, result.output


def test_published_port_comes_from_the_environment(compose: list[str]) -> None:
    """NGINX_HTTP_PORT changes the published port when compose runs; unset, the settings' port."""
    def published(**env: str) -> list[dict[str, Any]]:
        environ = {key: value for key, value in os.environ.items() if key != P.HTTP_PORT_ENV}
        proc = subprocess.run(
            [*compose, "--project-directory", str(REPO), "-f", str(REPO / "compose.yaml"),
             "config", "--format", "json"], capture_output=True, text=True, timeout=60,
            check=True, env={**environ, **env})
        ports: list[dict[str, Any]] = json.loads(proc.stdout)["services"]["nginx"]["ports"]
        return ports

    [default] = published()
    assert (default["host_ip"], default["published"], default["target"]) == ("127.0.0.1", "8080", 80)
    [chosen] = published(NGINX_HTTP_PORT="9123")
    assert (chosen["host_ip"], chosen["published"]) == ("127.0.0.1", "9123")


def test_compose_accepts_the_maximal_compose_file(project: Project, compose: list[str]) -> None:
    loaded = project("maximal.toml")
    write_files(loaded.directory, render_docker(loaded))
    result = tools.compose_config(compose, loaded.directory / "compose.yaml", loaded.directory)
    assert result.ok, result.output


def test_compose_file_contents(project: Project) -> None:
    compose = render_docker(project("maximal.toml"))[P.COMPOSE_FILE]
    for fragment in ['"0.0.0.0:${NGINX_HTTP_PORT:-80}:8000"',
                     '"0.0.0.0:${NGINX_HTTPS_PORT:-443}:8443"', "stop_grace_period: 30s",
                     "app-socket:/run/appserver:ro", 'cpus: "2.5"', 'memory: "1g"',
                     '"/health/live"]', "condition: service_healthy", 'restart: "always"',
                     "name: maximal-app", "interval: 10s"]:
        assert fragment in compose, fragment
    dockerfile = render_docker(project("maximal.toml"))[P.APP_DOCKERFILE]
    assert "pip install --no-cache-dir appserver -r requirements.txt" in dockerfile
    assert "USER app" in dockerfile


def test_committed_asgi_files_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    """deploy/asgi/ is settings.asgi.toml rendered (the sample app's ASGI twin in compose)."""
    assert run_command("render", "--check", "--settings", str(REPO / "settings.asgi.toml"),
                       "--out", str(REPO / "deploy" / "asgi")) == 0
    expected = len(render_docker(load_settings(REPO / "settings.asgi.toml"),
                                 REPO / "deploy" / "asgi"))
    assert f"up to date: {expected} files generated from settings.asgi.toml" in \
        capsys.readouterr().out
