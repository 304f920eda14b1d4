"""appserver.config: sources and their precedence, value parsers, error messages, bind addresses,
the default worker count and --print-config's TOML."""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from appserver import machine
from appserver.binds import parse_bind
from appserver.config import (
    HARD_MAX_FIELD_SIZE,
    HARD_MAX_FIELDS,
    HARD_MAX_REQUEST_LINE,
    BindAddress,
    ConfigError,
    ServerConfig,
    config_as_toml,
    load_config,
)
from appserver.machine import default_workers, usable_cpu_count

MiB = 1 << 20


def settings_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return str(path)


def load(cli: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
         file: str | None = None) -> ServerConfig:
    return load_config(cli or {}, settings_file=file, environ=env or {})


def error_of(cli: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
             file: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(cli, env=env, file=file)
    return str(info.value)


def test_defaults() -> None:
    cfg = load()
    assert cfg.bind == ["127.0.0.1:8000"] and cfg.worker_class == "sync" and cfg.timeout == 30
    assert cfg.workers == default_workers()
    assert cfg.wsgi_app is None and cfg.socket_mode == 0o660 and cfg.umask == 0
    assert cfg.limit_request_line == 4094 and cfg.limit_request_fields == 100
    assert cfg.limit_request_field_size == 8190


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    file = settings_file(tmp_path, "[server]\nworkers = 2\ntimeout = 10\nkeep_alive = 7\n"
                                   "[nginx]\nanything = 'belongs to the bundle'\n")
    cfg = load({"workers": 4}, env={"APPSERVER_WORKERS": "3", "APPSERVER_TIMEOUT": "20"}, file=file)
    assert (cfg.workers, cfg.timeout, cfg.keep_alive, cfg.graceful_timeout) == (4, 20, 7, 30)
    cfg = load(env={"APPSERVER_WORKERS": "3"}, file=file)
    assert (cfg.workers, cfg.timeout) == (3, 10)


def test_web_concurrency(tmp_path: Path) -> None:
    file = settings_file(tmp_path, "[server]\nworkers = 2\n")
    assert load(env={"WEB_CONCURRENCY": "6"}, file=file).workers == 6
    assert load({"workers": 9}, env={"WEB_CONCURRENCY": "6"}).workers == 9
    # The server's own variable is more specific than the platform's.
    assert load(env={"WEB_CONCURRENCY": "6", "APPSERVER_WORKERS": "7"}).workers == 7
    assert "environment WEB_CONCURRENCY = '0'" in error_of(env={"WEB_CONCURRENCY": "0"})


def test_environment_names_and_internal_variables() -> None:
    cfg = load(env={"APPSERVER_WORKER_CLASS": "gthread", "APPSERVER_THREADS": "4",
                    "APPSERVER_FDS": "3,4", "APPSERVER_PARENT_PID": "1", "OTHER": "x",
                    "APPSERVER_FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2",
                    "APPSERVER_PRELOAD_APP": "true", "APPSERVER_FORWARDED_HOPS": "2"})
    assert (cfg.worker_class, cfg.threads, cfg.preload_app) == ("gthread", 4, True)
    assert cfg.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"] and cfg.forwarded_hops == 2


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    file = settings_file(tmp_path, "[server]\nwrokers = 3\n")
    message = error_of(file=file)
    assert f"{file}: [server] wrokers: unknown setting 'wrokers'; did you mean 'workers'?" in message
    message = error_of(env={"APPSERVER_TIMOUT": "3"})
    assert "environment APPSERVER_TIMOUT" in message and "did you mean 'timeout'?" in message
    assert "did you mean" not in error_of({"zzzzzz": 1})


def test_every_unknown_key_is_reported_at_once() -> None:
    message = error_of({"wrokers": 1}, env={"APPSERVER_BAKLOG": "1"})
    assert "'wrokers'" in message and "'baklog'" in message and len(message.splitlines()) == 2


@pytest.mark.parametrize(("kwargs", "pieces"), [
    ({"env": {"APPSERVER_TIMEOUT": "soon"}}, ["environment APPSERVER_TIMEOUT", "'soon'", "integer"]),
    ({"env": {"APPSERVER_WORKER_CLASS": "fast"}}, ["APPSERVER_WORKER_CLASS", "'fast'", "sync, gthread"]),
    ({"cli": {"workers": 0}}, ["command line workers = 0", "greater than or equal to 1"]),
    ({"cli": {"forwarded_hops": 0}}, ["command line forwarded_hops = 0", "greater than or equal to 1"]),
    ({"cli": {"loglevel": "loud"}}, ["loglevel", "'loud'", "debug"]),
    ({"cli": {"raw_env": ["NOVALUE"]}}, ["raw_env", "'NOVALUE' is not KEY=VALUE"]),
    ({"cli": {"raw_env": ["=x"]}}, ["raw_env", "'=x' is not KEY=VALUE"]),
    ({"cli": {"wsgi_app": "not an app!"}}, ["wsgi_app", "MODULE:CALLABLE"]),
    ({"cli": {"bind": ["host:port"]}}, ["bind", "'host:port' is not HOST:PORT"]),
    ({"cli": {"bind": []}}, ["bind", "at least 1"]),
    ({"cli": {"limit_request_line": HARD_MAX_REQUEST_LINE + 1}}, ["limit_request_line", "65537"]),
])
def test_bad_values_name_source_key_value_and_what_is_allowed(kwargs: dict[str, Any],
                                                               pieces: list[str]) -> None:
    message = error_of(kwargs.get("cli"), env=kwargs.get("env"))
    for piece in pieces:
        assert piece in message


def test_bad_value_in_a_file_names_the_file(tmp_path: Path) -> None:
    file = settings_file(tmp_path, "[server]\nbacklog = -5\n")
    message = error_of(file=file)
    assert f"{file}: [server] backlog = -5" in message and "Listen backlog" in message


def test_cli_flag_names_appear_in_messages() -> None:
    message = str(pytest.raises(ConfigError, load_config, {"workers": "x"}, environ={},
                                cli_flags={"workers": "--workers"}).value)
    assert message.startswith("command line --workers = 'x'")


@pytest.mark.parametrize(("text", "problem"), [
    (None, "settings file not found"), ("[server\n", "not valid TOML"), ("server = 3\n", "must be a table"),
])
def test_broken_settings_files(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "settings.toml"
    if text is not None:
        path.write_text(text)
    assert problem in error_of(file=str(path))


def test_a_file_without_a_server_table_is_fine(tmp_path: Path) -> None:
    assert load(file=settings_file(tmp_path, "[nginx]\nx = 1\n")).workers == default_workers()


@pytest.mark.parametrize(("value", "mode"), [
    ("0660", 0o660), ("660", 0o660), ("0o660", 0o660), ("0O660", 0o660), (0o640, 0o640), ("7777", 0o7777),
    (" 0600 ", 0o600), ("0", 0),
])
def test_octal_modes(value: object, mode: int) -> None:
    assert load({"socket_mode": value}).socket_mode == mode
    assert load({"umask": value}).umask == mode


@pytest.mark.parametrize("value", ["0888", "10000", "rw-rw----", "", 0o10000, -1, "0x1ff"])
def test_bad_octal_modes(value: object) -> None:
    assert "socket_mode" in error_of({"socket_mode": value})


@pytest.mark.parametrize(("value", "size"), [
    ("512", 512 * MiB), (512, 512 * MiB), ("512M", 512 * MiB), ("512MiB", 512 * MiB), ("512mb", 512 * MiB),
    ("1G", 1 << 30), ("2gib", 2 << 30), ("64K", 64 << 10), ("64KiB", 64 << 10), ("100B", 100),
    (" 3 M ", 3 * MiB), ("0", 0), (0, 0),
])
def test_memory_sizes(value: object, size: int) -> None:
    assert load({"max_worker_memory": value}).max_worker_memory == size


@pytest.mark.parametrize("value", ["1.5G", "5T", "-1", "M", "lots", True, -1])
def test_bad_memory_sizes(value: object) -> None:
    assert "max_worker_memory" in error_of({"max_worker_memory": value})


@pytest.mark.parametrize(("text", "expected", "shown"), [
    ("127.0.0.1:8000", BindAddress("tcp", host="127.0.0.1", port=8000), "127.0.0.1:8000"),
    ("0.0.0.0:80", BindAddress("tcp", host="0.0.0.0", port=80), "0.0.0.0:80"),
    ("localhost", BindAddress("tcp", host="localhost", port=8000), "localhost:8000"),
    (":9000", BindAddress("tcp", host="0.0.0.0", port=9000), "0.0.0.0:9000"),
    ("[::1]:8080", BindAddress("tcp", host="::1", port=8080), "[::1]:8080"),
    ("[::]", BindAddress("tcp", host="::", port=8000), "[::]:8000"),
    ("[::ffff:127.0.0.1]:1", BindAddress("tcp", host="::ffff:127.0.0.1", port=1), "[::ffff:127.0.0.1]:1"),
    ("unix:/run/app.sock", BindAddress("unix", path="/run/app.sock"), "unix:/run/app.sock"),
    ("unix:///run/app.sock", BindAddress("unix", path="/run/app.sock"), "unix:/run/app.sock"),
    ("unix:relative.sock", BindAddress("unix", path="relative.sock"), "unix:relative.sock"),
    ("fd://3", BindAddress("fd", fd=3), "fd://3"),
])
def test_parse_bind(text: str, expected: BindAddress, shown: str) -> None:
    assert parse_bind(text) == expected
    assert str(expected) == shown
    assert parse_bind(shown) == expected


@pytest.mark.parametrize("text", ["host:port", "[::1", "::1:80", "1.2.3.4:70000", "unix:", "fd://",
                                  "fd://x", "fd://-1", "[::1]x"])
def test_parse_bind_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bind(text)


def test_bind_list_from_the_environment() -> None:
    cfg = load(env={"APPSERVER_BIND": "[::1]:80, unix:/tmp/s.sock"})
    assert [str(a) for a in cfg.addresses] == ["[::1]:80", "unix:/tmp/s.sock"]


def test_derived_values() -> None:
    assert load({"threads": 4}).effective_worker_class == "gthread"
    assert load({"threads": 4, "worker_class": "gevent"}).effective_worker_class == "gevent"
    cfg = load({"limit_request_line": 0, "limit_request_fields": 0, "limit_request_field_size": 0})
    assert (cfg.max_request_line, cfg.max_fields, cfg.max_field_size) == (
        HARD_MAX_REQUEST_LINE, HARD_MAX_FIELDS, HARD_MAX_FIELD_SIZE)
    assert load({"raw_env": ["A=1", "B=x=y"]}).env_pairs == {"A": "1", "B": "x=y"}


def test_settings_are_frozen() -> None:
    with pytest.raises(ValueError):
        load().workers = 3


# ---- default worker count -----------------------------------------------------------------------

def _cgroup_quota_here() -> float | None:
    """This machine's CPU quota, read independently of the code under test."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    if v2.exists():
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    if v1.exists():
        quota_us = int(v1.read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    return None


def test_usable_cpus_here() -> None:
    quota = _cgroup_quota_here()
    expected = len(os.sched_getaffinity(0))
    if quota is not None:
        expected = min(expected, max(1, math.ceil(quota)))
    assert usable_cpu_count() == expected
    assert default_workers() == 2 * expected + 1


def test_cpu_affinity_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert usable_cpu_count() == 1
    assert load().workers == 3


def test_without_affinity_the_cpu_count_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_affinity(pid: int) -> set[int]:
        raise OSError("not here")

    monkeypatch.setattr(os, "sched_getaffinity", no_affinity)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.setattr(machine, "Path", lambda p: tmp_path / p.lstrip("/"))  # no cgroup files
    assert usable_cpu_count() == 6


V1 = "sys/fs/cgroup/cpu/"


@pytest.mark.parametrize(("files", "cpus"), [
    ({"sys/fs/cgroup/cpu.max": "max 100000\n"}, 8),
    ({"sys/fs/cgroup/cpu.max": "50000 100000\n"}, 1),
    ({"sys/fs/cgroup/cpu.max": "150000 100000\n"}, 2),
    ({"sys/fs/cgroup/cpu.max": "400000 100000\n"}, 4),
    ({"sys/fs/cgroup/cpu.max": "2000000 100000\n"}, 8),   # a quota above the affinity
    ({V1 + "cpu.cfs_quota_us": "-1\n", V1 + "cpu.cfs_period_us": "100000\n"}, 8),
    ({V1 + "cpu.cfs_quota_us": "300000\n", V1 + "cpu.cfs_period_us": "100000\n"}, 3),
    ({"sys/fs/cgroup/cpu.max": "garbage\n"}, 8),
])
def test_container_cpu_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str],
                             cpus: int) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(machine, "Path", lambda p: tmp_path / p.lstrip("/"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert usable_cpu_count() == cpus
    assert default_workers() == 2 * cpus + 1


# ---- --print-config -----------------------------------------------------------------------------

def round_trip(cfg: ServerConfig) -> ServerConfig:
    table = tomllib.loads(config_as_toml(cfg))["server"]
    return load_config(table, environ={})


def test_print_config_round_trips_the_defaults() -> None:
    cfg = load()
    assert round_trip(cfg) == cfg


def test_print_config_round_trips_everything_set() -> None:
    cfg = load({
        "wsgi_app": "pkg.app:create('prod')", "bind": ["[::1]:81", "unix:/tmp/a b.sock"],
        "workers": 3, "worker_class": "gthread", "threads": 8, "umask": "027", "socket_mode": "0600",
        "socket_group": "www-data", "max_worker_memory": "1536K", "websocket_max_message_size": "3",
        "access_log_format": '%(h)s "%(r)s" \\ %({x-id}i)s', "preload_app": True, "header_timeout": 2.5,
        "raw_env": ["A=1", 'Q="quoted"'], "forwarded_allow_ips": "*", "chdir": "/srv/app",
        "limit_request_body": 1000,
    })
    assert round_trip(cfg) == cfg


def test_print_config_lists_every_setting_with_its_help() -> None:
    text = config_as_toml(load())
    for name, field in ServerConfig.model_fields.items():
        assert f"\n{name} = " in text or f"\n# {name} =  (unset)" in text, name
        assert f"# {field.description}" in text
