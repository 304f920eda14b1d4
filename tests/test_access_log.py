"""The access log's gunicorn atoms, compared with gunicorn 27's own rendering of the same request
(gunicorn is a test dependency): a format that works with gunicorn works here."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger as GunicornLogger

from appserver.config import ServerConfig
from appserver.logs import AccessLog

ENVIRON = {
    "REQUEST_METHOD": "GET", "RAW_URI": "/path?x=1", "PATH_INFO": "/path", "QUERY_STRING": "x=1",
    "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.1.2.3", "HTTP_REFERER": "http://ref/",
    "HTTP_USER_AGENT": "curl/8", "HTTP_X_REQUEST_ID": "abc-123", "HTTP_X_EMPTY": "",
}
RESPONSE_HEADERS = [("Content-Type", "text/plain"), ("X-Served-By", "unit")]
# Atoms whose value depends on the moment or process are compared by shape only.
FORMATS = [
    '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s"',
    "%(m)s %(U)s %(q)s %(H)s",
    "%({x-request-id}i)s %({X-Request-Id}i)s %({x-missing}i)s",
    "%({content-type}o)s %({x-served-by}o)s %({x-none}o)s",
    "%({REMOTE_ADDR}e)s %({NOPE}e)s",
]


def ours(fmt: str, tmp_path: Path) -> str:
    path = tmp_path / "access.log"
    path.unlink(missing_ok=True)
    log = AccessLog(ServerConfig(accesslog=str(path), access_log_format=fmt))
    log.log(ENVIRON, "200 OK", RESPONSE_HEADERS, 42, 0.25)
    return path.read_text().rstrip("\n")


def gunicorns(fmt: str, tmp_path: Path) -> str:
    """The line gunicorn 27's own logger writes for the same request (its access())."""
    path = tmp_path / "gunicorn-access.log"
    path.unlink(missing_ok=True)
    cfg = GunicornConfig()
    cfg.set("accesslog", str(path))
    cfg.set("access_log_format", fmt)
    logger = GunicornLogger(cfg)
    resp: Any = SimpleNamespace(status="200 OK", headers=RESPONSE_HEADERS, sent=42,
                                response_length=42)
    req: Any = SimpleNamespace(headers=[(k[5:].replace("_", "-"), v) for k, v in ENVIRON.items()
                                        if k.startswith("HTTP_")])
    logger.access(resp, req, dict(ENVIRON), datetime.timedelta(seconds=0.25))
    for handler in logger.access_log.handlers:
        handler.close()
    return path.read_text().rstrip("\n")


@pytest.mark.parametrize("fmt", FORMATS)
def test_atoms_render_as_gunicorn_renders_them(fmt: str, tmp_path: Path) -> None:
    assert ours(fmt, tmp_path) == gunicorns(fmt, tmp_path)


def test_time_and_pid_atoms(tmp_path: Path) -> None:
    line = ours("%(t)s %(p)s %(T)s %(M)s %(D)s %(L)s", tmp_path)
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] <\d+> 0 250 250000 0\.250000",
                        line), line
    assert f"<{os.getpid()}>" in line


def test_an_unknown_atom_is_a_dash_with_a_warning(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="appserver"):
        assert ours("%(zz)s %(h)s %({x}z)s", tmp_path) == gunicorns("%(zz)s %(h)s %({x}z)s", tmp_path)
    assert ours("%(zz)s", tmp_path) == "-"
    assert "%(zz)s is no access log atom" in caplog.text
    assert "%({x}z)s is no access log atom" in caplog.text


def test_quotes_in_values_are_escaped_and_basic_auth_names_the_user(tmp_path: Path) -> None:
    environ = {**ENVIRON, "HTTP_USER_AGENT": 'evil" 200 "x', "HTTP_AUTHORIZATION": "Basic "
               "YWxpY2U6c2VjcmV0"}  # alice:secret
    path = tmp_path / "access.log"
    AccessLog(ServerConfig(accesslog=str(path), access_log_format='%(u)s "%(a)s"')).log(
        environ, "200 OK", [], 0, 0.0)
    assert path.read_text() == 'alice "evil\\" 200 \\"x"\n'
