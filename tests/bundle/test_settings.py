"""Settings files: valid ones load, bad ones fail naming file, key path, value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appserver.bundle.loading import load_settings, validate_settings
from appserver.bundle.settings import SettingsError
from appserver.bundle.values import format_size, parse_size

from .conftest import DATA, REPO, dump_toml

FILE = Path("/srv/project/settings.toml")


def error_for(data: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as info:
        validate_settings(data, FILE)
    return str(info.value)


def with_app(**tables: Any) -> dict[str, Any]:
    return {"app": {"module": "myapp:application"}, **tables}


def test_repository_settings_load() -> None:
    loaded = load_settings(REPO / "settings.toml")
    assert loaded.settings.app.module == "sample_app.app:app"
    assert loaded.settings.nginx.client_max_body_size == 10 * 1024 * 1024
    assert loaded.settings.compose.published_port == 8080
    assert "graceful_timeout" in loaded.explicit_server_keys
    # The automatic worker count: the sample chat's room spans the workers through Redis.
    assert "workers" not in loaded.explicit_server_keys
    assert loaded.settings.redis.mode == "local"
    assert loaded.settings.nginx.websocket_locations == ["/ws/"]


@pytest.mark.parametrize("name", ["maximal.toml", "bare.toml"])
def test_test_data_loads(name: str) -> None:
    load_settings(DATA / name)


def test_only_app_module_is_required() -> None:
    loaded = validate_settings(with_app(), FILE)
    assert loaded.settings.nginx.header_buffer_size == 8192
    assert loaded.explicit_server_keys == frozenset()


def test_unknown_key_names_file_key_value_and_allowed_keys() -> None:
    message = error_for(with_app(nginx={"gzipp": True}))
    assert f"{FILE}: nginx.gzipp = True: unknown key; did you mean 'gzip'?" in message
    assert "allowed in [nginx]: listen_port, ipv6, server_names" in message


def test_unknown_server_key_uses_the_servers_own_fields() -> None:
    message = error_for(with_app(server={"wrkers": 3}))
    assert "server.wrkers = 3: unknown key; did you mean 'workers'?" in message
    assert "graceful_timeout" in message  # the allowed list is ServerConfig's


def test_unknown_nested_key() -> None:
    message = error_for(with_app(nginx={"tls": {"enable": True}}))
    assert "nginx.tls.enable = True: unknown key; did you mean 'enabled'?" in message
    assert "allowed in [nginx.tls]: enabled, listen_port" in message


def test_unknown_table() -> None:
    message = error_for(with_app(docker={"x": 1}))
    assert "docker = {'x': 1}: unknown key" in message


def test_wrong_type() -> None:
    message = error_for(with_app(nginx={"worker_connections": "many"}))
    assert f"{FILE}: nginx.worker_connections = 'many': Input should be a valid integer" in message
    assert "(allowed: connections per nginx worker (clients and upstream together), 16-65535)" \
        in message


def test_wrong_type_in_server_table() -> None:
    message = error_for(with_app(server={"preload_app": "sometimes"}))
    assert "server.preload_app = 'sometimes': Input should be a valid boolean" in message
    assert "allowed: Load the app in the master before forking" in message


def test_out_of_range() -> None:
    message = error_for(with_app(nginx={"gzip_comp_level": 11}))
    assert "nginx.gzip_comp_level = 11: Input should be less than or equal to 9 (allowed: gzip " \
        "level, 1-9)" in message


def test_out_of_range_size() -> None:
    message = error_for(with_app(nginx={"header_buffer_size": "128k"}))
    assert "nginx.header_buffer_size = '128k': Input should be less than or equal to 65536" \
        in message
    assert "1k-64k" in message


def test_bad_size_syntax() -> None:
    message = error_for(with_app(nginx={"client_max_body_size": "ten megs"}))
    assert "nginx.client_max_body_size = 'ten megs': 'ten megs' is not a size such as 512, 8k, " \
        "10m or 1g" in message


def test_server_values_are_validated_by_the_server_model() -> None:
    message = error_for(with_app(server={"workers": 0, "worker_class": "fibers"}))
    assert "server.workers = 0: Input should be greater than or equal to 1" in message
    assert "server.worker_class = 'fibers': 'fibers' is not a worker class" in message
    assert "Worker class: sync, gthread" in message  # what is allowed


def test_missing_app_table() -> None:
    message = error_for({"nginx": {}})
    assert f"{FILE}: app: missing (allowed: the app to serve; required)" in message


def test_missing_app_module() -> None:
    message = error_for({"app": {"directory": "."}})
    assert f"{FILE}: app.module: missing (allowed: the app as MODULE:CALLABLE" in message


def test_bad_app_module_uses_the_servers_rule() -> None:
    message = error_for({"app": {"module": "my app"}})
    assert "app.module = 'my app': 'my app' is not MODULE:CALLABLE or MODULE:factory()" in message


@pytest.mark.parametrize("key", ["bind", "wsgi_app", "chdir", "pidfile"])
def test_computed_server_keys_are_refused(key: str) -> None:
    message = error_for(with_app(server={key: "x"}))
    assert f"{FILE}: server.{key} = 'x': not allowed here;" in message


@pytest.mark.parametrize("directory", ["/srv/app", "../elsewhere"])
def test_app_directory_must_be_inside_the_project(directory: str) -> None:
    message = error_for({"app": {"module": "m:app", "directory": directory}})
    assert f"app.directory = {directory!r}: {directory!r} must be a path relative to the " \
        "settings file" in message


def test_list_items_are_named_by_index() -> None:
    message = error_for(with_app(nginx={"unbuffered_locations": ["/ok", "bad path"]}))
    assert "nginx.unbuffered_locations[1] = 'bad path': 'bad path' is not a URL path" in message


def test_x_xss_protection_is_refused() -> None:
    message = error_for(with_app(nginx={"security_headers": {
        "extra": {"X-XSS-Protection": "1; mode=block"}}}))
    assert "X-XSS-Protection is obsolete" in message


def test_header_values_cannot_inject_nginx_variables() -> None:
    message = error_for(with_app(nginx={"security_headers": {
        "content_security_policy": "default-src $host"}}))
    assert "nginx.security_headers.content_security_policy = 'default-src $host'" in message


def test_trusted_proxies_must_be_networks() -> None:
    message = error_for(with_app(nginx={"trusted_proxies": ["10.0.0.0/8", "proxy.local"]}))
    assert "'proxy.local' is not an IP address or CIDR range" in message


def test_trusted_proxy_hops_need_trusted_proxies() -> None:
    message = error_for(with_app(nginx={"trusted_proxy_hops": 2}))
    assert "trusted_proxy_hops = 2 needs trusted_proxies" in message
    assert "or set trusted_proxy_hops = 1" in message
    message = error_for(with_app(nginx={"trusted_proxies": ["10.0.0.1"], "trusted_proxy_hops": 0}))
    assert "nginx.trusted_proxy_hops = 0" in message


def test_published_ports_must_differ() -> None:
    message = error_for(with_app(compose={"published_port": 9000, "published_tls_port": 9000}))
    assert "published_port and published_tls_port are both 9000; they must differ" in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_for({"app": {}, "nginx": {"gzip_comp_level": 0, "nope": 1}})
    assert len(message.splitlines()) == 3


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"settings.toml: settings file not found"):
        load_settings(tmp_path / "settings.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[app\nmodule = 1\n")
    with pytest.raises(SettingsError, match=r"bad.toml: not valid TOML"):
        load_settings(bad)


def test_errors_from_a_file_name_it(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(dump_toml({"app": {"module": "m:app"}, "compose": {"restart": "sometimes"}}))
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert f"{path}: compose.restart = 'sometimes': Input should be 'no', 'always', " \
        "'on-failure' or 'unless-stopped'" in str(info.value)


@pytest.mark.parametrize(("text", "size"), [
    ("512", 512), ("8k", 8192), ("8K", 8192), ("10m", 10485760), ("1g", 1 << 30), (4096, 4096)])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("size", "text"), [
    (0, "0"), (1000, "1000"), (8192, "8k"), (10485760, "10m"), (1 << 30, "1g"), (1536, "1536")])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size


def test_a_location_cannot_be_static_and_proxied() -> None:
    message = error_for(with_app(nginx={"websocket_locations": ["/ws/", "/static/"]}))
    assert "'/static/' is both nginx.static_url (files served by nginx) and in nginx." \
        "websocket_locations (proxied to the app); choose one" in message


def test_a_location_listed_twice() -> None:
    message = error_for(with_app(nginx={"websocket_locations": ["/ws/", "/ws/"]}))
    assert "'/ws/' is listed twice in nginx.websocket_locations" in message


def test_websocket_and_unbuffered_may_share_a_prefix() -> None:
    loaded = validate_settings(with_app(nginx={"websocket_locations": ["/live/"],
                                               "unbuffered_locations": ["/live/"]}), FILE)
    assert loaded.settings.nginx.websocket_locations == ["/live/"]


def test_websocket_locations_are_url_paths() -> None:
    message = error_for(with_app(nginx={"websocket_locations": ["ws"]}))
    assert "nginx.websocket_locations[0] = 'ws': 'ws' is not a URL path" in message
