"""Configuration sources, gunicorn's way: the same files, variables and flags given to
``appserver serve --print-config`` and to gunicorn 27's ``--print-config`` resolve to the same
values.  Both run as real processes, in the same directory, with the same environment."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from .conftest import Gunicorn, appserver_run

APP = '''
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ.get("GREETING", "none").encode()]

application = app
'''

CONF = '''
import multiprocessing
import os

bind = "127.0.0.1:" + os.environ.get("PORT", "8000")
workers = min(multiprocessing.cpu_count() * 2 + 1, int(os.environ.get("MAX_WORKERS", "4")))
timeout = 40
keepalive = 7
backlog = 500
graceful_timeout = 12
wsgi_app = "myapp:app"
'''

COMPARED = ("bind", "workers", "timeout", "keepalive", "backlog", "graceful_timeout", "wsgi_app")


def ours(cwd: Path, *args: str, env: dict[str, str]) -> dict[str, object]:
    done = appserver_run("--print-config", *args, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    table = tomllib.loads(done.stdout)["server"]
    table["keepalive"] = table.pop("keep_alive")
    return {key: table.get(key) for key in COMPARED}


def theirs(gunicorn: Gunicorn, cwd: Path, *args: str, env: dict[str, str]) -> dict[str, object]:
    done = gunicorn.run("--print-config", *args, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    values: dict[str, object] = {}
    for line in done.stdout.splitlines():
        name, sep, text = line.partition(" = ")
        if sep and name.strip() in COMPARED:
            try:
                values[name.strip()] = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                values[name.strip()] = text.strip()
    return values


def project(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(CONF)
    (tmp_path / "other.py").write_text(CONF.replace("timeout = 40", "timeout = 41"))
    (tmp_path / "confmod.py").write_text(CONF.replace("backlog = 500", "backlog = 501"))
    return tmp_path


# Each case: command-line arguments and environment; both servers must agree on the result.
CASES = {
    "default gunicorn.conf.py": ([], {}),
    "$PORT and a cap from the environment": ([], {"PORT": "9123", "MAX_WORKERS": "2"}),
    "GUNICORN_CMD_ARGS over the file": ([], {"GUNICORN_CMD_ARGS": "--workers=3 --timeout 50"}),
    "command line over GUNICORN_CMD_ARGS": (
        ["-t", "60", "--backlog", "64"], {"GUNICORN_CMD_ARGS": "--timeout=50 -w 3"}),
    "WEB_CONCURRENCY is only the default under a config file": ([], {"WEB_CONCURRENCY": "5"}),
    "-c in GUNICORN_CMD_ARGS replaces ./gunicorn.conf.py": (
        [], {"GUNICORN_CMD_ARGS": "-c other.py"}),
    "-c on the command line beats the one in GUNICORN_CMD_ARGS": (
        ["-c", "confmod.py"], {"GUNICORN_CMD_ARGS": "-c other.py"}),
    "-c python:MODULE": (["-c", "python:confmod"], {}),
    "gunicorn's keepalive flag spelling": (["--keep-alive", "9"], {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_both_servers_resolve_the_same_settings(tmp_path: Path, gunicorn: Gunicorn,
                                                case: str) -> None:
    args, env = CASES[case]
    cwd = project(tmp_path)
    expected = theirs(gunicorn, cwd, *args, env=env)
    assert ours(cwd, *args, env=env) == expected
    assert set(expected) == set(COMPARED)


def test_without_a_config_file_web_concurrency_and_cmd_args(tmp_path: Path,
                                                            gunicorn: Gunicorn) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    for env in ({"WEB_CONCURRENCY": "3"},
                {"WEB_CONCURRENCY": "3", "GUNICORN_CMD_ARGS": "--workers 2 -b 127.0.0.1:9"}):
        # Only what the sources set: the defaults differ on purpose (keep-alive 5 s vs 2 s,
        # so that nginx closes idle upstream connections first; see docs/settings.md).
        mine = ours(tmp_path, "myapp:app", env=env)
        reference = theirs(gunicorn, tmp_path, "myapp:app", env=env)
        assert (mine["workers"], mine["bind"]) == (reference["workers"], reference["bind"])


def test_the_app_on_the_command_line_beats_wsgi_app(tmp_path: Path) -> None:
    # gunicorn runs the positional app too, but its --print-config still shows the file's
    # wsgi_app (the positional never becomes the setting); ours shows what will run.
    done = appserver_run("--print-config", "myapp:application", cwd=project(tmp_path))
    assert 'wsgi_app = "myapp:application"  # command line MODULE:CALLABLE' in done.stdout


def test_print_config_names_each_source(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    done = appserver_run("--print-config", "-t", "60", cwd=cwd, env={
        "GUNICORN_CMD_ARGS": "--workers 3", "APPSERVER_CMD_ARGS": "--backlog 77",
        "APPSERVER_GRACEFUL_TIMEOUT": "9"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    conf = cwd / "gunicorn.conf.py"
    assert f'bind = ["127.0.0.1:8000"]  # file {conf}' in out
    assert "workers = 3  # env GUNICORN_CMD_ARGS" in out
    assert "backlog = 77  # env APPSERVER_CMD_ARGS" in out
    assert "graceful_timeout = 9  # env APPSERVER_GRACEFUL_TIMEOUT" in out
    assert "timeout = 60  # command line --timeout" in out
    assert 'worker_class = "sync"  # default' in out


def test_appserver_cmd_args_over_gunicorn_cmd_args(tmp_path: Path) -> None:
    cwd = project(tmp_path)
    done = appserver_run("--print-config", cwd=cwd, env={
        "GUNICORN_CMD_ARGS": "--workers 3 --backlog 10", "APPSERVER_CMD_ARGS": "--workers 2"})
    table = tomllib.loads(done.stdout)["server"]
    assert (table["workers"], table["backlog"]) == (2, 10)


@pytest.mark.parametrize(("text", "pieces"), [
    ("worker = 3\n", ["worker is not a setting", "did you mean 'workers'"]),
    ("WORKERS = 3\n", ["WORKERS is not a setting", "did you mean 'workers'"]),
    ("def post_forks(server, worker):\n    pass\n", ["did you mean 'post_fork'"]),
    ("http_protocols = 'h1'\n", ["http_protocols = 'h1' is ignored", "gunicorn's default"]),
])
def test_python_config_warnings(tmp_path: Path, text: str, pieces: list[str]) -> None:
    """gunicorn ignores these without a word (a deliberate difference: we warn)."""
    cwd = project(tmp_path)
    (cwd / "gunicorn.conf.py").write_text(CONF + text)
    done = appserver_run("--print-config", cwd=cwd)
    assert done.returncode == 0, done.stderr
    for piece in pieces:
        assert piece in done.stderr


@pytest.mark.parametrize("text", [
    "import os\nimport multiprocessing as mp\nfrom os.path import join\n_private = 1\n"
    "DATABASE_URL = 'x'\nbind_port = 1\ndef helper(x):\n    return x\nclass Settings:\n    pass\n",
])
def test_private_names_are_left_alone(tmp_path: Path, text: str) -> None:
    cwd = project(tmp_path)
    (cwd / "gunicorn.conf.py").write_text(CONF + text)
    done = appserver_run("--print-config", cwd=cwd)
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize(("args", "env", "text", "pieces"), [
    ([], {}, "http_protocols = \"h2\"\n", ["http_protocols is not supported yet"]),
    (["--http-protocols", "h2"], {}, "",
     ["command line --http-protocols: http_protocols is not supported yet"]),
    ([], {"GUNICORN_CMD_ARGS": "--http-protocols h2"}, "",
     ["environment GUNICORN_CMD_ARGS --http-protocols: http_protocols is not supported yet"]),
    ([], {"GUNICORN_CMD_ARGS": "--bogus"}, "", ["GUNICORN_CMD_ARGS: unrecognized arguments"]),
    ([], {"GUNICORN_CMD_ARGS": "--bind 'unterminated"}, "", ["cannot split it"]),
    ([], {}, "workers = 'many'\n", ["gunicorn.conf.py: workers = 'many'"]),
    ([], {}, "raise RuntimeError('boom')\n", ["executing the config file failed", "boom"]),
    ([], {}, "def post_fork(server):\n    pass\n", ["hook post_fork takes 2"]),
    ([], {}, "def ssl_context(conf):\n    pass\n", ["hook ssl_context takes 2"]),
    (["-c", "python:no_such_module"], {}, "", ["importing the config module failed"]),
    (["-c", "missing.py"], {}, "", ["missing.py: config file not found"]),
])
def test_refusals_name_the_source_and_the_setting(tmp_path: Path, args: list[str],
                                                  env: dict[str, str], text: str,
                                                  pieces: list[str]) -> None:
    """Where gunicorn 27 would run (an unsupported setting), we refuse at start-up: never a
    silently ignored setting."""
    cwd = project(tmp_path)
    (cwd / "gunicorn.conf.py").write_text(CONF + text)
    done = appserver_run("--print-config", *args, cwd=cwd, env=env)
    assert done.returncode == 2, done.stdout
    for piece in pieces:
        assert piece in done.stderr
