"""Many environments from one settings file: overlays, APPSERVER__ variables, ``render --env``,
``check --env`` and ``diff``, run as the real ``appserver`` command in a throwaway project."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from appserver.bundle.layering import env_value, load_layered
from appserver.bundle.settings import SettingsError
from appserver.bundle.tools import find_nginx

from .conftest import REPO, make_project

BASE = {
    "app": {"module": "myapp:application"},
    "server": {"workers": 2, "timeout": 30, "graceful_timeout": 20, "loglevel": "info"},
    "nginx": {
        "listen_port": 8000,
        "gzip_types": ["text/css", "application/json"],
        "static_dir": "static",
        "security_headers": {"referrer_policy": "same-origin"},
    },
}
OVERLAYS = {
    "dev": '[server]\nworkers = 1\nloglevel = "debug"\n',
    "staging": "[nginx]\nlisten_port = 8100\n",
    # Tables merge (security_headers keeps referrer_policy), lists are replaced (gzip_types).
    "prod": ("[server]\nworkers = 8\n\n[nginx]\nlisten_port = 8200\ngzip_types = [\"text/css\"]\n\n"
             "[nginx.security_headers]\ncontent_security_policy = \"default-src 'self'\"\n"),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with settings.toml and environments/{dev,staging,prod}.toml."""
    root = make_project(tmp_path / "project", BASE).parent
    (root / "environments").mkdir()
    for name, text in OVERLAYS.items():
        (root / "environments" / f"{name}.toml").write_text(text)
    return root


def appserver(project: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``appserver ARGS`` in the project, with no APPSERVER__ variable but ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPSERVER__")}
    env["PYTHONPATH"] = str(REPO)
    env.update(variables)
    return subprocess.run([sys.executable, "-m", "appserver", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_three_environments_render_complete_sets_and_pass_check(project: Path,
                                                                tmp_path: Path) -> None:
    done = appserver(project, "render", "--env", "dev", "--env", "staging", "--env", "prod")
    assert done.returncode == 0, done.stderr
    base = appserver(project, "render", "--out", str(tmp_path / "base"))
    assert base.returncode == 0, base.stderr
    expected = files_under(tmp_path / "base")
    # Everything render writes: nginx, compose, the server config, Kubernetes, systemd.
    assert {"nginx/nginx.conf", "compose.yaml", "deploy/appserver.toml",
            "deploy/kubernetes/deployment.yaml", "deploy/systemd/appserver.service"} <= expected
    for name in OVERLAYS:
        root = project / "deploy" / name
        assert files_under(root) == expected, name
        header = (root / "nginx" / "nginx.conf").read_text().splitlines()[0]
        assert header == (f"# generated from settings.toml + environments/{name}.toml; do not "
                          f"edit (run `appserver render --env {name}`)")
    workers = {name: tomllib.loads((project / "deploy" / name / "deploy" / "appserver.toml")
                                   .read_text())["server"]["workers"] for name in OVERLAYS}
    assert workers == {"dev": 1, "staging": 2, "prod": 8}
    assert "listen 8200 default_server;" in (project / "deploy/prod/nginx/nginx.conf").read_text()
    # The committed layout is checked like the base one.
    fresh = appserver(project, "render", "--check", "--env", "prod")
    assert fresh.returncode == 0 and "up to date" in fresh.stdout, fresh.stdout + fresh.stderr

    nginx = find_nginx()
    for name in OVERLAYS:
        done = appserver(project, "check", "--env", name)
        assert done.returncode == 0, f"{name}:\n{done.stdout}{done.stderr}"
        assert f"environment {name}: settings.toml + environments/{name}.toml" in done.stdout
        assert ("ok: nginx -t" if nginx else "skipped: nginx -t") in done.stdout


def test_tables_merge_and_lists_are_replaced(project: Path) -> None:
    loaded = load_layered(project / "settings.toml", environment="prod", environ={})
    nginx = loaded.settings.nginx
    assert nginx.gzip_types == ["text/css"]  # replaced, not appended to
    assert nginx.security_headers.content_security_policy == "default-src 'self'"
    assert nginx.security_headers.referrer_policy == "same-origin"  # kept from the base
    assert loaded.settings.server.timeout == 30  # [server] merged key by key
    assert loaded.settings.server.workers == 8
    assert appserver(project, "render", "--env", "prod").returncode == 0
    conf = (project / "deploy/prod/nginx/nginx.conf").read_text()
    assert "gzip_types text/css;" in conf
    assert "Content-Security-Policy \"default-src 'self'\"" in conf
    assert 'Referrer-Policy "same-origin"' in conf


def test_overlays_apply_in_order_and_variables_win(project: Path) -> None:
    (project / "a.toml").write_text("[server]\nworkers = 3\nthreads = 4\n")
    (project / "b.toml").write_text("[server]\nworkers = 5\n")
    done = appserver(project, "render", "--env", "prod", "--overlay", "a.toml", "--overlay",
                     "b.toml", APPSERVER__SERVER__THREADS="6", APPSERVER__NGINX__LISTEN_PORT="8443")
    assert done.returncode == 0, done.stderr
    server = tomllib.loads((project / "deploy/prod/deploy/appserver.toml").read_text())["server"]
    assert (server["workers"], server["threads"]) == (5, 6)
    conf = (project / "deploy/prod/nginx/nginx.conf").read_text()
    assert "listen 8443 default_server;" in conf
    assert conf.startswith("# generated from settings.toml + environments/prod.toml + a.toml + "
                           "b.toml + APPSERVER__NGINX__LISTEN_PORT + APPSERVER__SERVER__THREADS;")


def test_an_overlay_cannot_add_an_unknown_key(project: Path) -> None:
    (project / "environments" / "typo.toml").write_text(
        "[nginx]\nlisten_portt = 9000\n\n[nginx.tls]\nenabledd = true\n")
    done = appserver(project, "render", "--env", "typo")
    assert done.returncode == 1
    assert "environment typo:" in done.stderr
    assert ("environments/typo.toml: nginx.listen_portt = 9000: unknown key; did you mean "
            "'listen_port'?") in done.stderr
    assert "environments/typo.toml: nginx.tls.enabledd = True: unknown key" in done.stderr
    assert not (project / "deploy" / "typo").exists()


@pytest.mark.parametrize(("name", "text", "message"), [
    ("prod.yaml", "nginx:\n  listen_port: 9000\n", "prod.yaml: an overlay must be a TOML file"),
    ("broken.toml", "[nginx\n", "broken.toml: not valid TOML"),
    ("types.toml", '[nginx]\nlisten_port = "high"\n',
     "types.toml: nginx.listen_port = 'high': Input should be a valid integer"),
])
def test_a_bad_overlay_is_named(project: Path, name: str, text: str, message: str) -> None:
    (project / name).write_text(text)
    done = appserver(project, "check", "--overlay", name)
    assert done.returncode == 1
    assert message in done.stderr


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("APPSERVER__NGINX__LISTEN_PORT", "high",
     "environment variable APPSERVER__NGINX__LISTEN_PORT: nginx.listen_port = 'high': Input "
     "should be a valid integer"),
    ("APPSERVER__NGINX__LISTEN_PORT", "70000",
     "environment variable APPSERVER__NGINX__LISTEN_PORT: nginx.listen_port = 70000"),
    ("APPSERVER__NGINX__LISTENPORT", "8443",
     "environment variable APPSERVER__NGINX__LISTENPORT: nginx.listenport = 8443: unknown key; "
     "did you mean 'listen_port'?"),
    ("APPSERVER__NGINX", "8443", "environment variable APPSERVER__NGINX: not a settings key"),
    ("APPSERVER__NGINX__LISTEN_PORT__X", "1",
     "environment variable APPSERVER__NGINX__LISTEN_PORT__X: nginx.listen_port = 8100 is not a "
     "table"),
])
def test_a_bad_variable_is_named(project: Path, variable: str, value: str, message: str) -> None:
    done = appserver(project, "check", "--env", "staging", **{variable: value})
    assert done.returncode == 1
    assert message in done.stderr


def test_variable_values_are_toml_when_they_parse() -> None:
    assert env_value("8443") == 8443
    assert env_value("true") is True
    assert env_value('["/ws/", "/live/"]') == ["/ws/", "/live/"]
    assert env_value('"8443"') == "8443"
    assert env_value("auto") == "auto"
    assert env_value("0660") == "0660"  # not a TOML number (leading zero): the text
    assert env_value("10m") == "10m"
    assert env_value("1\nserver = 2") == "1\nserver = 2"  # one value, not a second key


def test_the_servers_own_variables_are_not_overrides(project: Path) -> None:
    """APPSERVER_<NAME> stays `appserver serve`'s; serve ignores the bundle's APPSERVER__ ones."""
    done = appserver(project, "serve", "--print-config", APPSERVER__NGINX__LISTEN_PORT="8443",
                     APPSERVER_WORKERS="3", APPSERVER_PURE="1")
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(done.stdout)["server"]["workers"] == 3
    # And the bundle ignores the server's: only the double underscore is an override.
    loaded = load_layered(project / "settings.toml", environ={"APPSERVER_WORKERS": "7",
                                                             "APPSERVER_REDIS_URL": "redis://x"})
    assert loaded.settings.server.workers == 2 and loaded.layers == ()


def test_diff_shows_what_differs_between_environments(project: Path) -> None:
    done = appserver(project, "diff", "staging", "prod")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "--- staging/nginx/nginx.conf\n+++ prod/nginx/nginx.conf\n" in out
    assert "-        listen 8100 default_server;\n+        listen 8200 default_server;\n" in out
    assert "--- staging/deploy/appserver.toml\n+++ prod/deploy/appserver.toml\n" in out
    assert "-workers = 2\n+workers = 8\n" in out
    # Only settings differ: not the header, nor the environment's own directory in paths.
    changed = [line for line in out.splitlines() if line.startswith(("-", "+"))]
    assert not [line for line in changed if "generated from" in line]
    assert "deploy/staging/" not in out and "deploy/prod/" not in out
    (project / "environments" / "staging2.toml").write_text(OVERLAYS["staging"])
    same = appserver(project, "diff", "staging", "staging2")
    assert (same.returncode, same.stdout) == (0, ""), same.stderr
    missing = appserver(project, "diff", "staging", "nowhere")
    assert missing.returncode == 2 and "environments/nowhere.toml not found" in missing.stderr


def test_a_cross_check_failure_fails_that_environment_only(project: Path) -> None:
    # The base's server.timeout is 30: nginx would cut requests the server still runs.
    (project / "environments" / "broken.toml").write_text("[nginx]\nproxy_read_timeout = 10\n")
    done = appserver(project, "render", "--env", "staging", "--env", "broken", "--env", "prod")
    assert done.returncode == 1
    assert "environment broken:\n" in done.stderr
    assert ("nginx.proxy_read_timeout = 10 is below server.timeout = 30" in done.stderr)
    assert "[nginx.proxy_read_timeout from environments/broken.toml]" in done.stderr
    assert "environment staging" not in done.stderr and "environment prod" not in done.stderr
    assert (project / "deploy/staging/nginx/nginx.conf").is_file()
    assert (project / "deploy/prod/nginx/nginx.conf").is_file()
    assert not (project / "deploy" / "broken").exists()
    check = appserver(project, "check", "--env", "broken")
    assert check.returncode == 1 and "environment broken:" in check.stderr


@pytest.mark.parametrize(("name", "message"), [
    ("Prod", "an environment name is lowercase letters"),
    ("kubernetes", "deploy/kubernetes/ holds files of the base render"),
    ("qa", "environments/qa.toml not found"),
])
def test_environment_names(project: Path, name: str, message: str) -> None:
    (project / "environments" / "kubernetes.toml").write_text(OVERLAYS["staging"])
    done = appserver(project, "render", "--env", name)
    assert done.returncode == 1 and message in done.stderr
    assert not (project / "deploy" / "kubernetes" / "nginx").exists()


def test_overlay_errors_without_the_command_line(project: Path) -> None:
    (project / "extra.toml").write_text("[compose]\npublished_port = 0\n")
    with pytest.raises(SettingsError, match=r"extra\.toml: compose\.published_port = 0"):
        load_layered(project / "settings.toml", [project / "extra.toml"], environ={})
