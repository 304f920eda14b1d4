"""Cross-checks: each disagreement between nginx, the server and compose fails with its message;
values the bundle derives always agree."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle import plan as P
from appserver.bundle.crosscheck import (
    check_files,
    cross_check,
    cross_check_warnings,
    socket_writable,
)
from appserver.bundle.loading import Loaded
from appserver.bundle.render import render_docker
from appserver.bundle.settings import SettingsError

from .test_render import run_command

Project = Callable[..., Loaded]


def problems(loaded: Loaded) -> list[str]:
    return cross_check(loaded, [P.docker_plan(loaded), P.local_plan(loaded, loaded.directory / "run")])


def only_problem(project: Project, edit: Callable[[dict[str, Any]], None]) -> str:
    loaded = project("maximal.toml", edit)
    found = problems(loaded)
    assert len(found) == 1, found
    assert found[0].startswith(f"{loaded.path}: ")
    # The render refuses the same settings with the same message.
    with pytest.raises(SettingsError) as info:
        render_docker(loaded)
    assert found[0] in str(info.value)
    return found[0]


def test_maximal_and_bare_settings_agree(project: Project) -> None:
    assert problems(project("maximal.toml")) == []
    assert problems(project("bare.toml")) == []


def test_derived_values_agree_by_construction(project: Project) -> None:
    def bare_server(data: dict[str, Any]) -> None:
        data.pop("server")
        del data["compose"]["stop_grace_period"]
        data["nginx"]["header_buffer_size"] = "32k"
        data["nginx"]["client_max_body_size"] = "100m"
        data["nginx"]["upstream_keepalive_timeout"] = 300
        data["nginx"]["websocket_locations"] = []  # they need a worker class set explicitly

    loaded = project("maximal.toml", bare_server)
    assert problems(loaded) == []
    table = P.docker_plan(loaded).server_table
    assert table["limit_request_line"] == table["limit_request_field_size"] == 32 * 1024
    assert table["limit_request_body"] == 100 * 1024 * 1024
    assert table["keep_alive"] == 300 + P.KEEPALIVE_MARGIN
    assert table["socket_group"] == "www-data"
    assert table["bind"] == ["unix:/run/appserver/app.sock"]
    docker = P.docker_plan(loaded).docker
    assert docker is not None and docker.stop_grace_period == 30 + P.STOP_MARGIN


def test_stop_grace_period_is_derived_from_graceful_timeout(project: Project) -> None:
    def unset(data: dict[str, Any]) -> None:
        del data["compose"]["stop_grace_period"]
        data["server"]["graceful_timeout"] = 100

    plan = P.docker_plan(project("maximal.toml", unset))
    assert plan.docker is not None
    assert plan.docker.stop_grace_period == 100 + P.STOP_MARGIN


def test_proxy_read_timeout_below_server_timeout(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nginx"]["proxy_read_timeout"] = 45

    message = only_problem(project, edit)
    assert "nginx.proxy_read_timeout = 45 is below server.timeout = 60: nginx would answer 504" \
        in message
    assert "raise nginx.proxy_read_timeout to at least 60" in message


def test_graceful_timeout_above_stop_grace_period(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["graceful_timeout"] = 29  # stop_grace_period is 30

    message = only_problem(project, edit)
    assert "compose.stop_grace_period = 30 leaves no time for server.graceful_timeout = 29" \
        in message
    assert "set compose.stop_grace_period to at least 31" in message


def test_request_line_limit_below_nginx_buffer(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["limit_request_line"] = 4094  # nginx passes up to 16k

    message = only_problem(project, edit)
    assert "server.limit_request_line = 4094 is below nginx.header_buffer_size = '16k' " \
        "(16384 bytes): nginx would pass lines the server rejects with 414" in message


def test_field_size_limit_below_nginx_buffer(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["limit_request_field_size"] = 8190

    message = only_problem(project, edit)
    assert "server.limit_request_field_size = 8190 is below nginx.header_buffer_size" in message
    assert "rejects with 431" in message


def test_body_limit_below_client_max_body_size(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["limit_request_body"] = 1_000_000  # nginx passes up to 25m

    message = only_problem(project, edit)
    assert "server.limit_request_body = 1000000 is below nginx.client_max_body_size = '25m' " \
        "(26214400 bytes): nginx would pass bodies the server rejects with 413" in message


def test_body_limit_with_unlimited_nginx(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["limit_request_body"] = 1_000_000
        data["nginx"]["client_max_body_size"] = 0

    message = only_problem(project, edit)
    assert "nginx.client_max_body_size = no limit" in message


def test_keep_alive_must_exceed_upstream_keepalive_timeout(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["keep_alive"] = 75  # equal is not enough

    message = only_problem(project, edit)
    assert "server.keep_alive = 75 must exceed nginx.upstream_keepalive_timeout = 75" in message
    assert "or set nginx.upstream_keepalive = 0" in message


def test_keep_alive_is_free_without_upstream_keepalive(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["keep_alive"] = 2
        data["nginx"]["upstream_keepalive"] = 0

    assert problems(project("maximal.toml", edit)) == []


def test_socket_mode_without_group_write(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["socket_mode"] = "0640"

    message = only_problem(project, edit)
    assert 'server.socket_mode = "0640" (docker): nginx\'s workers (user www-data, uid 33) ' \
        "cannot write to the socket" in message
    assert 'use socket_mode = "0660" with socket_group = "www-data"' in message


def test_socket_group_that_nginx_is_not_in(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["socket_group"] = "app"

    message = only_problem(project, edit)
    assert "owned by app (uid 10001) with group id 10001" in message


def test_world_writable_socket_works_for_any_group(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["socket_group"] = "app"
        data["server"]["socket_mode"] = "0666"

    assert problems(project("maximal.toml", edit)) == []


def test_unknown_socket_group(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["socket_group"] = "nginx"

    message = only_problem(project, edit)
    assert "server.socket_group = 'nginx': no such group in the app image (known: www-data (33), " \
        "app (10001), or a numeric id)" in message


def test_socket_mode_the_local_user_cannot_write(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["socket_mode"] = "0060"  # group only: fine in Docker, not for the owner

    loaded = project("maximal.toml", edit)
    found = problems(loaded)
    if os.geteuid() == 0:
        assert found == []  # root's nginx workers (user root) may write anything
    else:
        assert len(found) == 1 and "(local): locally nginx's workers run as uid" in found[0]


def test_the_server_behind_nginx_believes_one_hop(project: Project) -> None:
    # nginx replaces X-Forwarded-For with the one address it believes: the hops in front of
    # nginx are nginx.trusted_proxy_hops, never the server's.
    message = only_problem(project, lambda data: data["server"].update(forwarded_hops=2))
    assert "server.forwarded_hops = 2, but nginx sends the server one X-Forwarded-For" in message
    assert "nginx.trusted_proxy_hops" in message


def test_port_collision_with_the_health_server(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nginx"]["listen_port"] = P.HEALTH_PORT

    message = only_problem(project, edit)
    assert f"nginx.listen_port = {P.HEALTH_PORT} collides with the health check server" in message


def test_port_collision_between_http_and_https(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nginx"]["tls"]["listen_port"] = 8000

    message = only_problem(project, edit)
    assert "nginx.listen_port = 8000 collides with nginx.tls.listen_port" in message


@pytest.mark.parametrize(("mode", "owner", "gid", "nginx_uid", "nginx_gids", "ok"), [
    (0o660, 10001, 33, 33, {33}, True),     # group write, nginx in the group
    (0o640, 10001, 33, 33, {33}, False),    # group read only
    (0o660, 10001, 10001, 33, {33}, False),  # nginx not in the group
    (0o666, 10001, 10001, 33, {33}, True),  # others may write
    (0o600, 1000, 1000, 1000, {1000}, True),  # same user: owner bits
    (0o060, 1000, 1000, 1000, {1000}, False),  # owner bits decide for the owner
    (0o000, 1000, 1000, 0, {0}, True),      # root
])
def test_socket_writable(mode: int, owner: int, gid: int, nginx_uid: int, nginx_gids: set[int],
                         ok: bool) -> None:
    assert socket_writable(mode, owner, gid, nginx_uid, frozenset(nginx_gids)) is ok


def test_check_files_names_what_is_missing(project: Project, tmp_path: Path) -> None:
    loaded = project("maximal.toml")
    assert check_files(loaded) == []
    (loaded.directory / "myapp.py").unlink()
    (loaded.directory / "tls" / "privkey.pem").unlink()
    (loaded.directory / "static" / "hello.txt").unlink()
    (loaded.directory / "static").rmdir()
    found = check_files(loaded)
    assert f"{loaded.path}: app.module = 'myapp:application': no module 'myapp' in app.directory" \
        in found[0]
    assert "nginx.static_dir = 'static': no such directory" in found[1]
    assert "nginx.tls.certificate_key = 'tls/privkey.pem': no such file" in found[2]
    assert len(found) == 3


# ---- WebSockets --------------------------------------------------------------------------------


def test_websocket_locations_need_a_worker_that_holds_connections(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"].update(worker_class="sync", threads=1)

    message = only_problem(project, edit)
    assert "nginx.websocket_locations = ['/ws/', '/events/', '/'] needs a worker class that " \
        'holds connections open, but server.worker_class = "sync" serves one request at a time ' \
        "and answers every WebSocket upgrade with 501" in message
    assert 'set server.worker_class = "gthread"' in message


def test_sync_with_threads_is_gthread(project: Project) -> None:
    # The server runs "sync" with threads > 1 as gthread, and so does the check.
    assert problems(project("maximal.toml", lambda d: d["server"].update(worker_class="sync"))) == []


def test_without_websocket_locations_sync_is_fine(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"].update(worker_class="sync", threads=1, websocket_ping_interval=3600.0)
        data["nginx"].update(websocket_locations=[], websocket_read_timeout=1)

    assert problems(project("maximal.toml", edit)) == []


def test_gthread_needs_threads_left_for_pages(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["websocket_max_connections"] = 8  # threads = 8

    message = only_problem(project, edit)
    assert "server.websocket_max_connections = 8 is not below server.threads = 8: each open " \
        "WebSocket holds one of a gthread worker's threads" in message
    assert "nginx answers 504" in message
    assert problems(project("maximal.toml", lambda d: d["server"].update(
        websocket_max_connections=7))) == []


def test_websocket_read_timeout_must_exceed_the_ping_interval(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nginx"]["websocket_read_timeout"] = 29  # ping interval 25, margin 5

    message = only_problem(project, edit)
    assert "nginx.websocket_read_timeout = 29 does not exceed server.websocket_ping_interval = " \
        "25 by 5s: nginx would close an idle WebSocket (the client sees 1006)" in message
    assert "raise nginx.websocket_read_timeout to at least 30" in message
    assert problems(project("maximal.toml", lambda d: d["nginx"].update(
        websocket_read_timeout=30))) == []


def test_fractional_ping_interval_rounds_the_needed_timeout_up(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["websocket_ping_interval"] = 20.5
        data["nginx"]["websocket_read_timeout"] = 25

    assert "at least 26" in only_problem(project, edit)


def test_the_ordinary_read_timeout_is_not_tied_to_pings(project: Project) -> None:
    # Only the WebSocket locations carry WebSockets; proxy_read_timeout answers to server.timeout.
    def edit(data: dict[str, Any]) -> None:
        data["server"].update(timeout=10, websocket_ping_interval=100.0)
        data["nginx"].update(proxy_read_timeout=10, websocket_read_timeout=105)

    assert problems(project("maximal.toml", edit)) == []


def warnings(loaded: Loaded) -> list[str]:
    return cross_check_warnings(
        loaded, [P.docker_plan(loaded), P.local_plan(loaded, loaded.directory / "run")])


def test_no_pings_is_a_warning_not_an_error(project: Project,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"].update(websocket_ping_interval=0.0, websocket_idle_timeout=0.0)

    loaded = project("maximal.toml", edit)
    assert problems(loaded) == []
    conf = render_docker(loaded)[P.NGINX_CONF]  # renders, and says why the timeout matters
    assert "# The server sends no pings: nginx closes a WebSocket that stays silent" in conf
    [warning] = warnings(loaded)  # once, though both targets see it
    assert warning.startswith(f"warning: {loaded.path}: server.websocket_ping_interval = 0 (no "
                              f"pings) and nginx.websocket_read_timeout = 300: nginx closes a "
                              f"WebSocket that stays silent for 300s")
    assert "fine if the app sends its own heartbeats more often" in warning
    # The render command prints it and succeeds.
    assert run_command("render", "--settings", str(loaded.path)) == 0
    assert warning in capsys.readouterr().err


@pytest.mark.parametrize(("idle", "warned"), [(0.0, True), (299.0, False), (300.0, True)])
def test_no_pings_with_an_idle_timeout(project: Project, idle: float, warned: bool) -> None:
    # An idle timeout below nginx's closes silent WebSockets cleanly (1000) before nginx cuts them.
    def edit(data: dict[str, Any]) -> None:
        data["server"].update(websocket_ping_interval=0.0, websocket_idle_timeout=idle)

    assert bool(warnings(project("maximal.toml", edit))) is warned


def test_no_warning_without_websocket_locations(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["websocket_ping_interval"] = 0.0
        data["nginx"]["websocket_locations"] = []

    assert warnings(project("maximal.toml", edit)) == []


# ---- app.interface ---------------------------------------------------------------------------


def asgi(data: dict[str, Any]) -> None:
    """maximal.toml for an ASGI app: the worker class and threads left to the bundle."""
    data["app"]["interface"] = "asgi"
    for key in ("worker_class", "threads", "websocket_max_connections"):
        data["server"].pop(key, None)


def test_asgi_runs_on_the_asyncio_class(project: Project) -> None:
    loaded = project("maximal.toml", asgi)
    assert problems(loaded) == [] and warnings(loaded) == []
    for plan in (P.docker_plan(loaded), P.local_plan(loaded, loaded.directory / "run")):
        assert (plan.server.worker_class, plan.server.interface) == ("asyncio", "asgi")
        assert plan.server_table["worker_class"] == "asyncio"
        assert plan.server_table["interface"] == "asgi"
    config = render_docker(loaded)[P.SERVER_CONFIG]
    assert 'worker_class = "asyncio"\n' in config and 'interface = "asgi"\n' in config


def test_a_wsgi_app_states_no_interface(project: Project) -> None:
    config = render_docker(project("maximal.toml"))[P.SERVER_CONFIG]
    assert "interface" not in config and 'worker_class = "gthread"' in config


@pytest.mark.parametrize("worker_class", ["gthread", "sync", "gevent", "tornado"])
def test_asgi_with_another_worker_class_is_an_error(project: Project, worker_class: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        asgi(data)
        data["server"]["worker_class"] = worker_class

    with pytest.raises(SettingsError) as info:
        project("maximal.toml", edit)
    [message] = str(info.value).splitlines()
    assert message.endswith(
        f'server.worker_class = "{worker_class}" cannot serve app.interface = "asgi": ASGI apps '
        f'run on the asyncio worker class; set server.worker_class = "asyncio" (or remove it: '
        f'app.interface = "asgi" chooses asyncio), or set app.interface = "wsgi" for a WSGI app')


@pytest.mark.parametrize("worker_class", ["asyncio", "asgi", "uvicorn.workers.UvicornWorker"])
def test_asgi_with_the_asyncio_class_or_an_asgi_name(project: Project, worker_class: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        asgi(data)
        data["server"]["worker_class"] = worker_class

    loaded = project("maximal.toml", edit)
    assert problems(loaded) == []
    assert P.docker_plan(loaded).server_table["worker_class"] == "asyncio"


def test_an_asgi_worker_name_for_a_wsgi_app_is_an_error(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["worker_class"] = "uvicorn.workers.UvicornWorker"

    with pytest.raises(SettingsError) as info:
        project("maximal.toml", edit)
    assert 'server.worker_class names an ASGI worker (it means asyncio with interface "asgi"), ' \
        'but app.interface = "wsgi": set app.interface = "asgi"' in str(info.value)


def test_server_interface_is_computed_from_the_app(project: Project) -> None:
    with pytest.raises(SettingsError) as info:
        project("maximal.toml", lambda d: d["server"].update(interface="asgi"))
    assert "server.interface = 'asgi': not allowed here; set app.interface instead" \
        in str(info.value)


def test_asgi_is_checked_against_nginx_as_wsgi_is(project: Project) -> None:
    """The timeouts, limits and WebSocket pings do not depend on the interface."""
    def edit(data: dict[str, Any]) -> None:
        asgi(data)
        data["nginx"]["websocket_read_timeout"] = 29  # ping interval 25, margin 5
        data["nginx"]["proxy_read_timeout"] = 30  # server.timeout 60

    found = problems(project("maximal.toml", edit))
    assert len(found) == 2, found
    assert "nginx.proxy_read_timeout = 30 is below server.timeout = 60" in found[0]
    assert "nginx.websocket_read_timeout = 29 does not exceed server.websocket_ping_interval" \
        in found[1]


def test_threads_for_an_asgi_app_are_a_warning(project: Project) -> None:
    def edit(data: dict[str, Any]) -> None:
        asgi(data)
        data["server"]["threads"] = 32

    loaded = project("maximal.toml", edit)
    assert problems(loaded) == []
    [warning] = warnings(loaded)
    assert warning.startswith(f'warning: {loaded.path}: server.threads = 32 does not apply to '
                              f'app.interface = "asgi"')
