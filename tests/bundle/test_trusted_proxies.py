"""The bundle's nginx with ``nginx.trusted_proxies`` and ``nginx.trusted_proxy_hops``, for real.

127.0.0.2 plays the trusted proxy (``trusted_proxies = ["127.0.0.2"]``): a client socket bound
there before connecting (Linux routes 127.0.0.0/8 to lo).  127.0.0.1 is an untrusted client.
The app behind nginx reports the REMOTE_ADDR and scheme it got, over the unix socket.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Iterator

import pytest

from appserver.bundle.tools import find_nginx
from appserver.testing import Stack, start_stack

from ..behaviour.client import environ_seen
from .conftest import REPO

APP = "tests.behaviour.app:app"
TRUSTED, UNTRUSTED = "127.0.0.2", "127.0.0.1"


@pytest.fixture(scope="module", params=[1, 2], ids=lambda hops: f"hops{hops}")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    # The server's access log as the repository's settings.toml has it (rid= and the duration).
    sample = tomllib.loads((REPO / "settings.toml").read_text())["server"]
    server = {"workers": 1, "accesslog": sample["accesslog"],
              "access_log_format": sample["access_log_format"]}
    settings = {"server": server,
                "nginx": {"trusted_proxies": [TRUSTED], "trusted_proxy_hops": request.param}}
    with start_stack(APP, directory=REPO, settings=settings,
                     run_dir=tmp_path_factory.mktemp("stack")) as running:
        yield running


def hops(stack: Stack) -> int:
    return int(stack.loaded.settings.nginx.trusted_proxy_hops)


def ask(stack: Stack, source: str, headers: dict[str, str],
        path: str = "/environ") -> tuple[str, str]:
    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    env = environ_seen(host, int(port), source=source, headers=headers, path=path)
    # nginx replaces X-Forwarded-For with the one address it believes.
    assert env["HTTP_X_FORWARDED_FOR"] == env["REMOTE_ADDR"]
    return env["REMOTE_ADDR"], env["wsgi.url_scheme"]


def test_an_untrusted_client_cannot_forge(stack: Stack) -> None:
    forged = {"X-Forwarded-For": "6.6.6.6, 7.7.7.7", "X-Forwarded-Proto": "https, https"}
    assert ask(stack, UNTRUSTED, forged) == (UNTRUSTED, "http")


@pytest.mark.parametrize("source", [UNTRUSTED, TRUSTED])
def test_no_client_sends_the_other_scheme_headers(stack: Stack, source: str) -> None:
    """gunicorn's X-Forwarded-Ssl and X-Forwarded-Protocol (secure_scheme_headers) are the
    server's to believe from nginx: nginx never passes a client's."""
    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    env = environ_seen(host, int(port), source=source, path="/environ",
                       headers={"X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl"})
    assert "HTTP_X_FORWARDED_SSL" not in env and "HTTP_X_FORWARDED_PROTOCOL" not in env
    assert env["wsgi.url_scheme"] == "http"


def test_the_trusted_proxy_is_believed_for_its_hops_only(stack: Stack) -> None:
    # The trusted proxy appended 203.0.113.7; with two hops the proxy before it appended
    # 198.51.100.2.  6.6.6.6 is what the client sent: never believed.
    headers = {"X-Forwarded-For": "6.6.6.6, 198.51.100.2, 203.0.113.7",
               "X-Forwarded-Proto": "http, https, http"}
    expected = ("203.0.113.7", "http") if hops(stack) == 1 else ("198.51.100.2", "https")
    assert ask(stack, TRUSTED, headers) == expected


def test_fewer_entries_than_hops_leave_the_proxy_address(stack: Stack) -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    expected = ("203.0.113.7", "https") if hops(stack) == 1 else (TRUSTED, "http")
    assert ask(stack, TRUSTED, headers) == expected


def test_a_trusted_proxy_without_headers_is_the_client(stack: Stack) -> None:
    assert ask(stack, TRUSTED, {}) == (TRUSTED, "http")


def test_the_access_log_names_the_believed_client(stack: Stack) -> None:
    marker = f"/environ?log={time.monotonic_ns()}"
    ask(stack, TRUSTED, {"X-Forwarded-For": "6.6.6.6, 198.51.100.2, 203.0.113.7"}, path=marker)
    deadline = time.monotonic() + 5  # nginx writes the line once the response is sent
    while not (lines := [x for x in stack.log("nginx-access.log").splitlines() if marker in x]):
        assert time.monotonic() < deadline, stack.log("nginx-access.log")
        time.sleep(0.05)
    assert lines[0].split()[0] == ("203.0.113.7" if hops(stack) == 1 else "198.51.100.2")


@pytest.mark.parametrize("source", [UNTRUSTED, TRUSTED])
def test_the_request_id_is_nginx_s_and_in_its_access_log(stack: Stack, source: str) -> None:
    """X-Request-ID reaches the app as nginx's $request_id, whoever sent one, and nginx's access
    line for the request carries the same id (rid=), so one request is found in both logs."""
    marker = f"/environ?rid={time.monotonic_ns()}"
    host, port = stack.url.removeprefix("http://").rsplit(":", 1)
    env = environ_seen(host, int(port), source=source, path=marker,
                       headers={"X-Request-ID": "chosen-by-the-client"})
    request_id = env["HTTP_X_REQUEST_ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0, request_id
    deadline = time.monotonic() + 5  # nginx writes the line once the response is sent
    while not (lines := [x for x in stack.log("nginx-access.log").splitlines() if marker in x]):
        assert time.monotonic() < deadline, stack.log("nginx-access.log")
        time.sleep(0.05)
    assert lines[0].endswith(f" rid={request_id}"), lines[0]
    # The server's own access line (settings.toml's accesslog = "-": its standard output)
    # carries the same id and the time the app took.
    while not (lines := [x for x in stack.log("appserver.log").splitlines() if marker in x]):
        assert time.monotonic() < deadline + 5, stack.log("appserver.log")[-3000:]
        time.sleep(0.05)
    assert re.search(r'" 200 \d+ \d+ms rid=' + request_id + "$", lines[0]), lines[0]
