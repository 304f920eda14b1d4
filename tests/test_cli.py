"""appserver.cli at parse level: --print-config, --check-config and the errors, through main()
(and once through the real console entry point).  No server is started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from appserver.cli import main
from appserver.config import ServerConfig, default_workers


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No settings from the caller's environment; sys.path, cwd and the test apps' modules are
    restored after each test."""
    for name in list(os.environ):
        if name.startswith("APPSERVER_") or name == "WEB_CONCURRENCY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", None)):
            del sys.modules[name]


def printed_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["serve", "--print-config", *args]) == 0
    out = capsys.readouterr().out
    table = tomllib.loads(out)["server"]
    assert isinstance(table, dict)
    return table


def failure(capsys: pytest.CaptureFixture[str], *args: str, code: int = 2) -> str:
    assert main(list(args)) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_print_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    table = printed_config(capsys)
    assert table["bind"] == ["127.0.0.1:8000"] and table["workers"] == default_workers()
    unset = {name for name in ServerConfig.model_fields if getattr(ServerConfig(), name) is None}
    assert "wsgi_app" in unset and set(table) == set(ServerConfig.model_fields) - unset


def test_gunicorn_style_flags(capsys: pytest.CaptureFixture[str]) -> None:
    table = printed_config(capsys, "-b", "127.0.0.1:9000", "--bind", "unix:/tmp/app.sock", "-w", "3",
                           "-k", "gthread", "--threads", "4", "--preload", "-e", "A=1", "--env", "B=2",
                           "--limit-request-field_size", "1000", "--forwarded-allow-ips", "10.0.0.1,10.0.0.2",
                           "--forwarded-hops", "2", "--max-worker-memory", "512M", "--socket-mode", "0600", "--log-level", "debug",
                           "app:application")
    assert table["bind"] == ["127.0.0.1:9000", "unix:/tmp/app.sock"]
    assert (table["workers"], table["worker_class"], table["threads"]) == (3, "gthread", 4)
    assert table["preload_app"] is True and table["raw_env"] == ["A=1", "B=2"]
    assert table["limit_request_field_size"] == 1000 and table["loglevel"] == "debug"
    assert table["forwarded_allow_ips"] == ["10.0.0.1", "10.0.0.2"] and table["forwarded_hops"] == 2
    assert (table["max_worker_memory"], table["socket_mode"]) == ("512MiB", "0600")
    assert table["wsgi_app"] == "app:application"


def test_precedence_through_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s.toml").write_text("[server]\nworkers = 2\ntimeout = 11\nbacklog = 64\n")
    monkeypatch.setenv("APPSERVER_TIMEOUT", "22")
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    table = printed_config(capsys, "--settings", "s.toml", "--backlog", "128")
    assert (table["workers"], table["timeout"], table["backlog"]) == (7, 22, 128)


def test_print_config_output_feeds_back_in(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--print-config", "-w", "3", "--max-worker-memory", "1536K", "--umask", "027",
                 "--access-logformat", '%(h)s "%(r)s" \\ done', "--header-timeout", "2.5",
                 "app:make('x')"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "printed.toml").write_text(text)
    assert main(["serve", "--print-config", "--settings", "printed.toml"]) == 0
    again = capsys.readouterr().out
    assert tomllib.loads(again) == tomllib.loads(text)
    # Only the source comments differ: each value now comes from the file.
    assert "workers = 3  # command line --workers" in text
    assert f"workers = 3  # file {tmp_path / 'printed.toml'}" in again


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPSERVER_") and k != "WEB_CONCURRENCY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_console_entry_point(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "appserver", "serve", "--print-config", "-w", "2"],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(done.stdout)["server"]["workers"] == 2
    done = subprocess.run([sys.executable, "-m", "appserver", "serve", "--workers", "none"],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "--workers = 'none'" in done.stderr


@pytest.mark.parametrize(("args", "pieces"), [
    (["serve", "--print-config", "-w", "0"], ["--workers = '0'", "greater than or equal to 1"]),
    (["serve", "--print-config", "-k", "turbo"], ["--worker-class = 'turbo'", "sync, gthread"]),
    (["serve", "--print-config", "--socket-mode", "999"], ["--socket-mode = '999'", "octal"]),
    (["serve", "--print-config", "-b", "nowhere:x"], ["--bind", "'nowhere:x' is not HOST:PORT"]),
    (["serve", "--print-config", "-e", "NOEQUALS"], ["--env", "'NOEQUALS' is not KEY=VALUE"]),
    (["serve", "--print-config", "--settings", "missing.toml"], ["missing.toml: settings file not found"]),
    (["serve"], ["no app given"]),
])
def test_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], args: list[str],
                                      pieces: list[str]) -> None:
    err = failure(capsys, *args)
    assert err.startswith("appserver: error: ")
    for piece in pieces:
        assert piece in err


def test_unknown_key_in_the_settings_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("[server]\nkeepalvie = 3\n")
    err = failure(capsys, "serve", "--print-config", "--settings", "s.toml")
    assert "[server] keepalvie: unknown setting 'keepalvie'; did you mean 'keepalive'?" in err
    # gunicorn's spelling is an alias of ours.
    (tmp_path / "s.toml").write_text("[server]\nkeepalive = 3\n")
    assert printed_config(capsys, "--settings", "s.toml")["keep_alive"] == 3


def test_top_level_keys_of_a_toml_file_are_an_error(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    # The case: a gunicorn-style file that parses as TOML used to be ignored whole.
    (tmp_path / "s.toml").write_text('bind = "0.0.0.0:8000"\nworkers = 3\n[nginx]\nx = 1\n')
    err = failure(capsys, "serve", "--print-config", "--settings", "s.toml")
    assert "s.toml: bind, workers: outside any table" in err and "[server]" in err


@pytest.mark.parametrize("args", [["serve", "--no-such-flag"], ["serve", "--workers"], ["frobnicate"], []])
def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage: appserver" in capsys.readouterr().err


def test_help_lists_every_setting_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for field in ServerConfig.model_fields.values():
        extra = field.json_schema_extra
        flags = extra.get("cli", []) if isinstance(extra, dict) else []
        assert isinstance(flags, list)
        for flag in flags:
            assert str(flag) in out


def test_schema_and_settings_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) == set(ServerConfig.model_fields)
    assert main(["settings-doc"]) == 0
    doc = capsys.readouterr().out
    assert all(f"| `{name}` |" in doc for name in ServerConfig.model_fields)


# ---- --check-config -------------------------------------------------------------------------------

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]

def create(name="x"):
    return application

not_callable = 42
'''


def write_app(tmp_path: Path, name: str, text: str = APP) -> None:
    (tmp_path / f"{name}.py").write_text(text)


@pytest.mark.parametrize("spec", ["{m}", "{m}:application", "{m}:create()", "{m}:create('prod')"])
def test_check_config_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str) -> None:
    name = f"okapp_{abs(hash(spec))}"
    write_app(tmp_path, name)
    assert main(["serve", "--check-config", spec.format(m=name)]) == 0
    assert "are OK" in capsys.readouterr().out


def test_check_config_with_chdir_and_pythonpath(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    write_app(tmp_path / "src", "elsewhere_app")
    assert main(["serve", "--check-config", "--pythonpath", str(tmp_path / "src"), "elsewhere_app"]) == 0
    (tmp_path / "proj").mkdir()
    write_app(tmp_path / "proj", "chdir_app")
    assert main(["serve", "--check-config", "--chdir", str(tmp_path / "proj"), "chdir_app:application"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("spec", "text", "piece"), [
    ("nosuchmodule_xyz:app", None, "no module named 'nosuchmodule_xyz'"),
    ("{m}:missing", APP, "has no attribute 'missing'"),
    ("{m}:not_callable", APP, "is not callable"),
    ("{m}:create(os.environ)", APP, "factory arguments must be Python literals"),
    ("{m}", "raise RuntimeError('boom at import')\n", "failed (traceback above)"),
])
def test_check_config_app_errors_exit_4(capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str,
                                        text: str | None, piece: str) -> None:
    name = f"badapp_{abs(hash((spec, text)))}"
    if text is not None:
        write_app(tmp_path, name, text)
    err = failure(capsys, "serve", "--check-config", spec.format(m=name), code=4)
    assert piece in err and "appserver: error:" in err


def test_check_config_validates_settings_before_the_app(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    write_app(tmp_path, "fine_app")
    err = failure(capsys, "serve", "--check-config", "--timeout", "-1", "fine_app")
    assert "--timeout = '-1'" in err
