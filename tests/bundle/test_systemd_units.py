"""deploy/systemd/: the units, sysusers.d and tmpfiles.d files, the nginx site and the server config
for a plain server (issue 16), checked by the tools that will read them.

* ``systemd-analyze verify`` (Debian's systemd package; no running systemd is needed) on the
  rendered units, with paths that exist here.  It reports unknown keys and unparsable values as
  messages while still exiting 0, so every message fails the test; a deliberately broken unit
  proves the check can fail.
* ``nginx -t`` on the site file included from the distribution's own nginx.conf (Debian's, copied
  into a temporary prefix with its paths moved there).
* The cross-checks of the systemd target, each naming both values.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle.loading import Loaded, load_settings
from appserver.bundle.render import render_docker
from appserver.bundle.settings import SettingsError
from appserver.bundle.systemd import DIRECTORY, systemd_plan

Project = Callable[..., Loaded]
REPO = Path(__file__).resolve().parents[2]
SOCKET = f"{DIRECTORY}/appserver.socket"
SERVICE = f"{DIRECTORY}/appserver.service"
SITE = f"{DIRECTORY}/nginx-site.conf"
CONFIG = f"{DIRECTORY}/appserver.toml"
STOCK_NGINX_CONF = Path("/etc/nginx/nginx.conf")
VENV = str(Path(sys.executable).parent.parent)  # the .venv running the tests: bin/appserver exists


def here(project_dir: Path | None = None) -> Callable[[dict[str, Any]], None]:
    """An edit pointing [systemd] at paths that exist on this machine."""
    def edit(data: dict[str, Any]) -> None:
        table = data.setdefault("systemd", {})
        table["venv"] = VENV
        if project_dir is not None:
            table["project_dir"] = str(project_dir)
    return edit


def unit(text: str) -> dict[str, list[str]]:
    """KEY -> values of a unit file (every section together; the keys used here are unique)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_render_writes_the_units_from_the_same_settings(project: Project) -> None:
    loaded = project("maximal.toml")
    files = render_docker(loaded)
    socket, service = unit(files[SOCKET]), unit(files[SERVICE])
    server = tomllib.loads(files[CONFIG])["server"]
    sd = loaded.settings.systemd
    # The socket the unit holds is the one the server config binds and nginx proxies to.
    path = f"{sd.runtime_dir}/app.sock"
    assert socket["ListenStream"] == [path]
    assert server["bind"] == [f"unix:{path}"]
    assert f"server unix:{path};" in files[SITE]
    assert socket["SocketMode"] == [server["socket_mode"]] == ["0660"]
    assert socket["SocketUser"] == [sd.user] and socket["SocketGroup"] == ["www-data"]
    assert socket["Backlog"] == ["4096"]  # server.backlog of maximal.toml
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["User"] == [sd.user]
    assert service["ExecStart"] == [f"{sd.venv}/bin/appserver serve --settings "
                                    f"{sd.config_dir}/appserver.toml"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]
    assert service["TimeoutStopSec"] == [str(20 + 5)]  # graceful_timeout + 5
    assert service["WatchdogSec"] == ["30"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                       ("CapabilityBoundingSet", ""), ("ReadWritePaths", sd.runtime_dir),
                       ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
                       ("SystemCallArchitectures", "native")):
        assert service[key] == [value], key
    assert server["chdir"] == sd.project_dir  # app.directory "." where the project is installed
    assert files[f"{DIRECTORY}/appserver-tmpfiles.conf"].splitlines()[-1] == \
        f"d {sd.runtime_dir} 0750 {sd.user} www-data -"
    assert re.search(rf"^u {sd.user} - \".*\" {sd.project_dir} /usr/sbin/nologin$",
                     files[f"{DIRECTORY}/appserver-sysusers.conf"], re.M)


def test_the_repository_units_listen_for_metrics_on_loopback() -> None:
    """On a host, the metrics listener is the local stack's (loopback), not the container's."""
    plan, _ = systemd_plan(load_settings(REPO / "settings.toml"))
    assert plan.server_table["metrics_bind"] == "127.0.0.1:9101"
    assert plan.server_table["control_socket"] == "/run/appserver/ctl.sock"


def test_systemd_settings_change_the_units(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["systemd"] = {"user": "shop", "runtime_dir": "/run/shop", "timeout_stop_sec": 60,
                           "watchdog_sec": 0, "read_write_paths": ["/var/lib/shop"],
                           "restart": "always"}
    files = render_docker(project("maximal.toml", edit))
    service = unit(files[SERVICE])
    assert service["User"] == ["shop"] and service["TimeoutStopSec"] == ["60"]
    assert "WatchdogSec" not in service and service["Restart"] == ["always"]
    assert service["ReadWritePaths"] == ["/run/shop /var/lib/shop"]
    assert unit(files[SOCKET])["ListenStream"] == ["/run/shop/app.sock"]


# ---- systemd-analyze verify -------------------------------------------------------------------


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def verify(directory: Path) -> tuple[int, str]:
    """``systemd-analyze verify`` of the two units; its messages (none means clean)."""
    result = subprocess.run(
        [analyze(), "verify", "--man=no", str(directory / "appserver.socket"),
         str(directory / "appserver.service")], capture_output=True, text=True, timeout=120)
    # Messages about the host rather than the units (none are known to be needed here).
    acceptable: tuple[str, ...] = ()
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line.strip() and not any(a in line for a in acceptable)]
    return result.returncode, "\n".join(lines)


def write(files: dict[str, str], root: Path) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / DIRECTORY


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_systemd_analyze_verify_accepts_the_units(project: Project, tmp_path: Path,
                                                  source: str) -> None:
    loaded = project(source, here())
    directory = write(render_docker(loaded), tmp_path / "out")
    code, messages = verify(directory)
    assert code == 0 and messages == "", messages


def test_systemd_analyze_verify_reports_a_broken_unit(project: Project, tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad boolean are reported (exit 0)."""
    directory = write(render_docker(project("maximal.toml", here())), tmp_path / "out")
    service = directory / "appserver.service"
    service.write_text(service.read_text().replace("NoNewPrivileges=yes",
                                                    "NoNewPrivileges=maybe\nProtectSistem=strict"))
    _, messages = verify(directory)
    assert "Failed to parse boolean value" in messages and "ProtectSistem" in messages, messages


def test_systemd_analyze_verify_needs_the_venv(project: Project, tmp_path: Path) -> None:
    """ExecStart is checked: the default venv (/srv/appserver/.venv) does not exist here."""
    directory = write(render_docker(project("bare.toml")), tmp_path / "out")
    code, messages = verify(directory)
    assert code != 0 and "/srv/appserver/.venv/bin/appserver" in messages, messages


# ---- nginx -t with the distribution's nginx.conf ----------------------------------------------


def stock_prefix(root: Path, site: str) -> Path:
    """Debian's /etc/nginx copied under ``root`` with only our site enabled, every path the
    stock nginx.conf writes moved under ``root``; returns the copied nginx.conf."""
    if not STOCK_NGINX_CONF.is_file():
        pytest.fail(f"{STOCK_NGINX_CONF} is missing: install Debian's nginx (./run does)")
    etc = root / "etc" / "nginx"
    shutil.copytree(STOCK_NGINX_CONF.parent, etc, symlinks=True)
    shutil.rmtree(etc / "sites-enabled")
    (etc / "sites-enabled").mkdir()
    logs = root / "log"
    logs.mkdir()
    (etc / "sites-available" / "appserver").write_text(site.replace("/var/log/nginx", str(logs)))
    os.symlink(etc / "sites-available" / "appserver", etc / "sites-enabled" / "appserver")
    text = STOCK_NGINX_CONF.read_text()
    assert "include /etc/nginx/sites-enabled/*;" in text, "not Debian's nginx.conf"
    text = text.replace("/etc/nginx/", f"{etc}/").replace("/var/log/nginx", str(logs)) \
        .replace("/run/nginx.pid", str(root / "nginx.pid"))
    # The compiled-in temp paths are root's; an unprivileged `nginx -t` creates them here.
    temp = "".join(f"\t{kind}_temp_path {root}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {\n", "http {\n" + temp, 1)
    conf = etc / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_t(nginx: str, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(conf.parent)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("source", ["maximal.toml", "bare.toml"])
def test_nginx_accepts_the_site_in_debians_nginx_conf(project: Project, nginx: str,
                                                      tmp_path: Path, source: str) -> None:
    # maximal.toml has TLS, server names, trusted proxies, WebSocket and unbuffered locations:
    # the certificate paths must exist, so the project is "installed" where it was built.
    loaded = project(source)
    loaded = project(source, here(loaded.directory))
    site = render_docker(loaded)[SITE]
    result = nginx_t(nginx, stock_prefix(tmp_path / "prefix", site))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_of_the_site_can_fail(project: Project, nginx: str, tmp_path: Path) -> None:
    """The same check refuses a site whose names another enabled site already defines."""
    loaded = project("bare.toml")
    site = render_docker(loaded)[SITE]
    result = nginx_t(nginx, stock_prefix(tmp_path / "prefix", site + "\n" + site))
    assert result.returncode != 0 and "duplicate" in result.stderr, result.stderr


# ---- cross-checks -----------------------------------------------------------------------------


def refused(project: Project, edit: Callable[[dict[str, Any]], None]) -> str:
    loaded = project("maximal.toml", edit)
    with pytest.raises(SettingsError) as info:
        render_docker(loaded)
    return str(info.value)


def test_stop_timeout_must_outlast_the_graceful_timeout(project: Project) -> None:
    message = refused(project, lambda d: d.setdefault("systemd", {}).update(
        timeout_stop_sec=21))
    assert "systemd.timeout_stop_sec = 21" in message
    assert "server.graceful_timeout = 20" in message and "at least 22" in message


def test_paths_under_home_are_hidden_by_protect_home(project: Project) -> None:
    message = refused(project, lambda d: d.setdefault("systemd", {}).update(
        project_dir="/home/deploy/app"))
    assert "systemd.project_dir = '/home/deploy/app'" in message and "ProtectHome" in message


def test_the_socket_mode_must_let_nginx_connect(project: Project) -> None:
    # nginx runs as "nginx" (Fedora, RHEL): the socket's group www-data does not let it in.
    message = refused(project, lambda d: d.setdefault("systemd", {}).update(nginx_user="nginx"))
    assert 'server.socket_mode = "0660"' in message and "group 'www-data'" in message
    assert "systemd.nginx_user = 'nginx'" in message

    def fixed(data: dict[str, Any]) -> None:  # (a socket any local user may connect to)
        data["systemd"] = {"nginx_user": "nginx"}
        data["server"]["socket_mode"] = "0666"
    render_docker(project("maximal.toml", fixed))


def test_log_files_must_be_writable(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["errorlog"] = "/var/log/shop/error.log"
    message = refused(project, edit)
    assert "server.errorlog = '/var/log/shop/error.log'" in message
    assert "systemd.read_write_paths = []" in message

    def allowed(data: dict[str, Any]) -> None:
        edit(data)
        data["systemd"] = {"read_write_paths": ["/var/log/shop"]}
    render_docker(project("maximal.toml", allowed))


def test_daemon_mode_is_refused(project: Project) -> None:
    message = refused(project, lambda d: d["server"].update(daemon=True))
    assert "server.daemon = true" in message


def test_systemd_settings_are_validated(project: Project) -> None:
    with pytest.raises(SettingsError, match=r"systemd.venv = 'venv'.*absolute path"):
        project("maximal.toml", lambda d: d.setdefault("systemd", {}).update(venv="venv"))
    with pytest.raises(SettingsError, match=r"unknown key.*allowed in \[systemd\]"):
        project("maximal.toml", lambda d: d.setdefault("systemd", {}).update(usr="x"))
    with pytest.raises(SettingsError, match=r"systemd.watchdog_sec = 1"):
        project("maximal.toml", lambda d: d.setdefault("systemd", {}).update(watchdog_sec=1))
