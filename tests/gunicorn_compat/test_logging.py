"""gunicorn 27's logging settings in real deployments, each run by a real server and, where the
output can be compared, by gunicorn 27 itself with the same files.

* A Django-style ``logconfig_dict`` in ``gunicorn.conf.py`` with its own formatters, sending
  ``gunicorn.error`` and ``gunicorn.access`` to files; the same as an ini ``logconfig`` and a
  JSON ``logconfig_json``.
* Syslog to a UDP socket and a unix datagram socket the test owns: priority and facility,
  the program prefix, access lines present or not (disable_redirect_access_to_syslog).
* A ``logger_class`` subclass of ``gunicorn.glogging.Logger`` overriding ``access``.
* Broken configurations: a clear start-up error naming the setting and the file or key.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ..server.harness import Launcher, Server, free_port, listening, wait_for
from .conftest import Gunicorn, appserver_run, datagrams, next_run_dir

APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''

# Django projects keep a LOGGING dict like this one next to their gunicorn settings.
DICT_CONF = '''
import os

bind = "127.0.0.1:" + os.environ["PORT"]
workers = 2
worker_class = os.environ.get("WORKER_CLASS", "sync")
wsgi_app = "myapp:app"
LOG_DIR = os.environ["LOG_DIR"]

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "verbose": {"format": "%(levelname)s %(name)s %(process)d: %(message)s"},
        "access": {"format": "ACCESS %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "verbose"},
        "error_file": {"class": "logging.FileHandler", "formatter": "verbose",
                       "filename": os.path.join(LOG_DIR, "errors.log")},
        "access_file": {"class": "logging.FileHandler", "formatter": "access",
                        "filename": os.path.join(LOG_DIR, "access.log")},
    },
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_file"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access_file"], "propagate": False},
    },
    "root": {"level": "WARNING", "handlers": ["console"]},
}
'''

# The same settings without the dict, for the ini and JSON cases, syslog and logger_class.
BASE_CONF = DICT_CONF.split("logconfig_dict = ")[0]

INI = '''
[loggers]
keys=root,gunicorn.error,gunicorn.access

[handlers]
keys=error_file,access_file

[formatters]
keys=verbose,access

[logger_root]
level=WARNING
handlers=

[logger_gunicorn.error]
level=INFO
handlers=error_file
propagate=0
qualname=gunicorn.error

[logger_gunicorn.access]
level=INFO
handlers=access_file
propagate=0
qualname=gunicorn.access

[handler_error_file]
class=logging.FileHandler
formatter=verbose
args=('%(here)s/errors.log', 'a')

[handler_access_file]
class=logging.FileHandler
formatter=access
args=('%(here)s/access.log', 'a')

[formatter_verbose]
format=%(levelname)s %(name)s %(process)d: %(message)s

[formatter_access]
format=ACCESS %(message)s
'''

ACCESS_LINE = re.compile(r'ACCESS 127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                         r'"GET /hello\?x=1 HTTP/1\.1" 200 5 "-" "probe/1"')


def get(port: int, target: str = "/hello?x=1") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers={"User-Agent": "probe/1", "X-Trace": "t1"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def normalized(text: str) -> str:
    return re.sub(r"\[\d\d/\w{3}/\d{4}:[\d:]+ [+-]\d{4}\]", "[T]", text)


def run_ours(launcher: Launcher, files: dict[str, str], *options: str, workers: int = 2,
             env: dict[str, str] | None = None, logs: tuple[str, ...] = ("errors.log",),
             ) -> tuple[Server, Path, int]:
    """Our server in a fresh directory holding ``files``; ready to answer."""
    run = next_run_dir(launcher)
    for name, text in files.items():
        (run / name).write_text(text)
    port = free_port()
    server = launcher.start(*options, bind="none", workers=None, app="", wait=False,
                            env={"PORT": str(port), "LOG_DIR": str(run), **(env or {})})
    server.port = port
    server.extra_logs = [run / name for name in logs]
    server.wait_workers(workers, timeout=20)
    wait_for(lambda: listening(port), 20, "our server to listen", details=server.tail)
    return server, run, port


def stop_ours(server: Server) -> None:
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0, server.tail()


def run_theirs(gunicorn: Gunicorn, directory: Path, files: dict[str, str], *args: str,
               drive: Callable[[int], None]) -> Path:
    """gunicorn 27 in ``directory`` with the same files: ``drive(port)``, then TERM."""
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    port = free_port()
    proc = gunicorn.start(*args, cwd=directory, env={"PORT": str(port), "LOG_DIR": str(directory)})
    wait_for(lambda: listening(port), 20, "gunicorn to listen",
             details=lambda: (directory / "gunicorn.stderr").read_text())
    drive(port)
    assert gunicorn.stop(proc, 20) == 0
    return directory


# ---- logconfig_dict, logconfig (ini), logconfig_json -----------------------------------------

def json_config(directory: str) -> str:
    namespace: dict[str, object] = {}
    exec(DICT_CONF.replace('os.environ["PORT"]', '"0"').replace('os.environ["LOG_DIR"]',
                                                                  repr(directory)), namespace)
    return json.dumps(namespace["logconfig_dict"])


# gunicorn's %(here)s is the directory as the path spells it ("" for "logging.ini"): the ini
# case gives both servers an absolute path.
KINDS: dict[str, tuple[Callable[[str], dict[str, str]], Callable[[str], tuple[str, ...]]]] = {
    "dict": (lambda d: {"gunicorn.conf.py": DICT_CONF}, lambda d: ()),
    "ini": (lambda d: {"gunicorn.conf.py": BASE_CONF, "logging.ini": INI},
            lambda d: ("--log-config", f"{d}/logging.ini")),
    "json": (lambda d: {"gunicorn.conf.py": BASE_CONF, "logging.json": json_config(d)},
             lambda d: ("--log-config-json", "logging.json")),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_logging_config_shapes_both_logs_as_under_gunicorn(
        launcher: Launcher, gunicorn: Gunicorn, workdir: Path, kind: str) -> None:
    files, options = KINDS[kind]
    run = next_run_dir(launcher)
    server, run, port = run_ours(launcher, {"myapp.py": APP, **files(str(run))},
                                 *options(str(run)))
    assert get(port) == 200
    stop_ours(server)
    mine_access, mine_error = lines(run / "access.log"), lines(run / "errors.log")
    assert len(mine_access) == 1 and ACCESS_LINE.fullmatch(mine_access[0]), mine_access
    assert mine_error and all(re.match(r"(INFO|WARNING|ERROR) gunicorn\.error \d+: ", line)
                              for line in mine_error), mine_error
    assert any("booted" in line for line in mine_error)
    assert "booted" not in server.errorlog.read_text()  # the config replaced the handler

    theirs = workdir / "gunicorn"
    gunicorn_files = files(str(theirs))
    run_theirs(gunicorn, theirs, {"myapp.py": APP, **gunicorn_files}, *options(str(theirs)),
               drive=lambda p: get(p))
    their_access, their_error = lines(theirs / "access.log"), lines(theirs / "errors.log")
    assert [normalized(line) for line in mine_access] == [normalized(line) for line in their_access]
    assert all(re.match(r"(INFO|WARNING|ERROR) gunicorn\.error \d+: ", line)
               for line in their_error), their_error


def test_a_logging_config_under_the_asyncio_class(launcher: Launcher) -> None:
    """The asyncio class writes its access lines from its event loop: the same records."""
    server, run, port = run_ours(launcher, {"myapp.py": APP, "gunicorn.conf.py": DICT_CONF},
                                 env={"WORKER_CLASS": "asyncio"})
    assert get(port) == 200
    stop_ours(server)
    access = lines(run / "access.log")
    assert len(access) == 1 and ACCESS_LINE.fullmatch(access[0]), access


# ---- syslog ----------------------------------------------------------------------------------


SYSLOG_ACCESS = re.compile(r'<158>gunicorn\.web\.access: \[\d+\] 127\.0\.0\.1 - - \[[^]]+\] '
                           r'"GET /hello\?x=1 HTTP/1\.1" 200 5 "-" "probe/1"\x00')


def shape(datagram: str) -> str:
    return normalized(re.sub(r"\[\d+\]", "[P]", datagram))


@pytest.mark.parametrize("redirect", [True, False], ids=["with-access", "no-access"])
def test_syslog_over_udp(launcher: Launcher, gunicorn: Gunicorn, workdir: Path,
                         udp: socket.socket, redirect: bool) -> None:
    """local3 (19) at info (6) is priority 158; the program is gunicorn.<prefix>.<log>."""
    target = f"udp://127.0.0.1:{udp.getsockname()[1]}"
    flags = ["--log-syslog", "--log-syslog-to", target, "--log-syslog-prefix", "web",
             "--log-syslog-facility", "LOCAL3",
             *([] if redirect else ["--disable-redirect-access-to-syslog"])]
    files = {"myapp.py": APP, "gunicorn.conf.py": BASE_CONF}
    server, _, port = run_ours(launcher, files, *flags, logs=())
    assert get(port) == 200
    stop_ours(server)
    mine = datagrams(udp)
    assert any(d.startswith("<158>gunicorn.web.error: [") and "booted" in d for d in mine), mine
    access = [d for d in mine if ".access:" in d]
    assert len(access) == (1 if redirect else 0), mine
    assert all(SYSLOG_ACCESS.fullmatch(d) for d in access), access
    assert "booted" in server.errorlog.read_text()  # the error log file has them too
    if not redirect:
        return
    run_theirs(gunicorn, workdir / "gunicorn", files, *flags, drive=lambda p: get(p))
    theirs = datagrams(udp)
    assert any(d.startswith("<158>gunicorn.web.error: [") for d in theirs), theirs
    assert [shape(d) for d in theirs if ".access:" in d] == [shape(d) for d in access]


def test_syslog_to_a_unix_datagram_socket(launcher: Launcher, workdir: Path) -> None:
    """No prefix: the program is named after the app; user facility (1) at info: <14>."""
    path = str(workdir / "syslog.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        server, _, port = run_ours(launcher, {"myapp.py": APP, "gunicorn.conf.py": BASE_CONF},
                                   "--log-syslog", "--log-syslog-to", f"unix://{path}#dgram",
                                   logs=())
        assert get(port) == 200
        stop_ours(server)
        mine = datagrams(sock)
    finally:
        sock.close()
    assert any(d.startswith("<14>gunicorn.myapp.app.error: [") and "booted" in d
               for d in mine), mine
    assert len([d for d in mine if d.startswith("<14>gunicorn.myapp.app.access: [")]) == 1, mine


# ---- logger_class ----------------------------------------------------------------------------

LOGGER_CONF = BASE_CONF + '''
accesslog = os.path.join(LOG_DIR, "access.log")

import datetime

from gunicorn import glogging


class RecordingLogger(glogging.Logger):
    """Records what access() was given, then logs the line as gunicorn does."""

    def access(self, resp, req, environ, request_time):
        with open(os.path.join(LOG_DIR, "calls.txt"), "a") as fh:
            fh.write(" ".join(str(part) for part in (
                "access", resp.status, req.method, req.path, req.query,
                ("X-TRACE", "t1") in req.headers, environ["PATH_INFO"],
                isinstance(request_time, datetime.timedelta), self.cfg.workers,
            )) + "\\n")
        super().access(resp, req, environ, request_time)

    def info(self, msg, *args, **kwargs):
        with open(os.path.join(LOG_DIR, "calls.txt"), "a") as fh:
            fh.write("info\\n")
        super().info(msg, *args, **kwargs)


logger_class = RecordingLogger
'''


def test_a_logger_class_subclass_is_called_as_gunicorn_calls_it(
        launcher: Launcher, gunicorn: Gunicorn, workdir: Path) -> None:
    files = {"myapp.py": APP, "gunicorn.conf.py": LOGGER_CONF}
    server, run, port = run_ours(launcher, files, logs=())
    assert get(port) == 200
    stop_ours(server)
    mine = lines(run / "calls.txt")
    assert [line for line in mine if line.startswith("access")] == \
        ["access 200 OK GET /hello x=1 True /hello True 2"]
    assert "info" in mine  # the server's messages go through the class's methods
    access = lines(run / "access.log")
    assert len(access) == 1 and ACCESS_LINE.fullmatch("ACCESS " + access[0]), access

    theirs = run_theirs(gunicorn, workdir / "gunicorn", files, drive=lambda p: get(p))
    assert [line for line in lines(theirs / "calls.txt") if line.startswith("access")] == \
        [line for line in mine if line.startswith("access")]
    assert [normalized(line) for line in lines(theirs / "access.log")] == \
        [normalized(line) for line in access]


# ---- start-up errors -------------------------------------------------------------------------

BROKEN = {
    "unknown handler class": (
        {"gunicorn.conf.py": BASE_CONF + 'logconfig_dict = {"handlers": {"out": {"class": '
         '"logging.NoSuchHandler"}}, "root": {"handlers": ["out"]}}\n'},
        (), ["logconfig_dict", "handler 'out'"]),
    "unwritable handler file": (
        {"gunicorn.conf.py": BASE_CONF + 'logconfig_dict = {"handlers": {"f": {"class": '
         '"logging.FileHandler", "filename": "/nonexistent/dir/x.log"}}, "loggers": {'
         '"gunicorn.error": {"handlers": ["f"]}}}\n'},
        (), ["logconfig_dict", "handler 'f'", "/nonexistent/dir/x.log"]),
    "missing ini": ({"gunicorn.conf.py": BASE_CONF}, ("--log-config", "nope.ini"),
                    ["--log-config nope.ini", "no such file"]),
    "ini without sections": ({"gunicorn.conf.py": BASE_CONF, "bad.ini": "[loggers]\nkeys=root\n"},
                             ("--log-config", "bad.ini"), ["--log-config bad.ini", "missing"]),
    "malformed json": ({"gunicorn.conf.py": BASE_CONF, "log.json": "{not json"},
                       ("--log-config-json", "log.json"), ["--log-config-json log.json",
                                                           "not valid JSON"]),
    "missing json": ({"gunicorn.conf.py": BASE_CONF}, ("--log-config-json", "nope.json"),
                     ["--log-config-json nope.json", "cannot read"]),
    "logger class not importable": ({"gunicorn.conf.py": BASE_CONF},
                                    ("--logger-class", "nomodule.Logger"),
                                    ["logger_class 'nomodule.Logger'", "cannot import"]),
    "logger class without the interface": (
        {"gunicorn.conf.py": BASE_CONF + "class Quiet:\n    def __init__(self, cfg):\n"
         "        pass\n\nlogger_class = Quiet\n"},
        (), ["logger_class __config__.Quiet", "no access, error"]),
    "bad syslog address": ({"gunicorn.conf.py": BASE_CONF},
                           ("--log-syslog", "--log-syslog-to", "http://x"),
                           ["--log-syslog-to", "'http://x' is not udp://HOST:PORT"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_logging_setting_is_a_clear_start_up_error(tmp_path: Path, case: str) -> None:
    files, options, wanted = BROKEN[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result: subprocess.CompletedProcess[str] = appserver_run(
        *options, cwd=tmp_path, env={"PORT": str(free_port()), "LOG_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for text in wanted:
        assert text in result.stderr, result.stderr
    assert "booted" not in result.stderr  # refused in the master, before any worker


# ---- reload ----------------------------------------------------------------------------------


def test_hup_applies_a_changed_logging_config_and_keeps_the_last_good_one(
        launcher: Launcher) -> None:
    """As gunicorn: HUP sets the logging up again; settings that cannot be applied leave the
    previous logging in force, and the error says why."""
    server, run, port = run_ours(launcher, {"myapp.py": APP, "gunicorn.conf.py": DICT_CONF})
    conf = run / "gunicorn.conf.py"

    def reload(generation: int) -> None:
        server.signal(signal.SIGHUP)
        server.wait_log(rf"booted \(sync, generation {generation}\)", count=2, timeout=20)
        server.wait_log(r"worker \d+ exited", count=2 * (generation - 1), timeout=20)

    conf.write_text(DICT_CONF.replace('"ACCESS %(message)s"', '"ACCESS2 %(message)s"'))
    reload(2)
    assert get(port) == 200
    conf.write_text(DICT_CONF.replace('"logging.FileHandler"', '"logging.NoSuchHandler"'))
    reload(3)
    assert get(port) == 200
    stop_ours(server)
    access = lines(run / "access.log")
    assert [line.split()[0] for line in access] == ["ACCESS2", "ACCESS2"], access
    assert "the logging settings are refused, the previous ones stay in force: " \
           "logconfig_dict: Unable to configure handler" in (run / "errors.log").read_text()
