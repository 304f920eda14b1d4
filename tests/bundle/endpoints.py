"""Checks of every sample_app endpoint through nginx, shared by the local stack and compose suites.

Each check takes a :class:`Target`: the base URL and what the deployment should look like from
outside (the client address nginx sees, the body limit).  ``CHECKS`` lists them all, so a suite
runs each as its own parametrized test.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

STATIC = Path(__file__).resolve().parents[2] / "sample_app" / "static"


@dataclass(frozen=True)
class Target:
    url: str
    client_address: str  # the address nginx sees for this test's requests
    body_limit: int  # nginx.client_max_body_size in bytes
    header_limit: int = 8192  # nginx.header_buffer_size

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)


def home_page(t: Target) -> None:
    response = t.get("/")
    assert response.status_code == 200
    assert response.headers["Server"] == "nginx"  # server_tokens off: no version
    assert response.headers["X-Served-By"] == "sample_app"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert f'<strong id="remote-addr">{t.client_address}</strong>' in response.text
    assert '<strong id="scheme">http</strong>' in response.text


def client_address_and_scheme_come_from_nginx(t: Target) -> None:
    # A client's own X-Forwarded-* are replaced by nginx, not believed.
    info = t.get("/api/info", headers={"X-Forwarded-For": "6.6.6.6",
                                       "X-Forwarded-Proto": "https"}).json()
    assert info["remote_addr"] == t.client_address
    assert info["forwarded_for"] == t.client_address
    assert info["scheme"] == "http"
    assert info["host"] == t.url.removeprefix("http://")  # the client's Host, with its port


def json_api(t: Target) -> None:
    response = requests.post(t.url + "/api/echo", json={"a": [1, 2, 3]}, timeout=10)
    assert response.status_code == 200
    assert response.json()["echo"] == {"a": [1, 2, 3]}
    bad = requests.post(t.url + "/api/echo", data=b"{not json",
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400 and bad.headers["X-Served-By"] == "sample_app"


def upload(t: Target) -> None:
    data = os.urandom(300_000)
    response = requests.post(t.url + "/upload", files={"file": ("blob.bin", data)},
                             data={"note": "hi"}, timeout=10)
    assert response.status_code == 200
    assert response.json()["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert response.json()["files"][0]["size"] == len(data)


def body_limit_is_answered_by_nginx(t: Target) -> None:
    response = requests.post(t.url + "/api/echo", data=b"x" * (t.body_limit + 1), timeout=30)
    assert response.status_code == 413
    assert "X-Served-By" not in response.headers


def streaming_arrives_as_it_is_produced(t: Target) -> None:
    started = time.monotonic()
    arrivals = []
    with requests.get(t.url + "/stream?lines=4&delay=0.3", stream=True, timeout=10) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        for line in resp.iter_lines():
            arrivals.append((time.monotonic() - started, line))
    assert [line.split(b" at ")[0] for _, line in arrivals] == [
        b"line 1 of 4", b"line 2 of 4", b"line 3 of 4", b"line 4 of 4"]
    # Unbuffered: the first line came well before the last one was produced (0.9 s later).
    assert arrivals[-1][0] - arrivals[0][0] > 0.6


def static_files_are_served_by_nginx(t: Target) -> None:
    css = t.get("/static/style.css")
    assert css.status_code == 200
    assert css.headers["Content-Type"] == "text/css"
    assert "X-Served-By" not in css.headers
    assert css.headers["Cache-Control"] == "max-age=3600"
    assert css.content == (STATIC / "style.css").read_bytes()
    assert t.get("/static/hello.txt").content == (STATIC / "hello.txt").read_bytes()
    assert t.get("/static/logo.svg").headers["Content-Type"] == "image/svg+xml"
    missing = t.get("/static/missing.css")
    assert missing.status_code == 404 and "X-Served-By" not in missing.headers


def health(t: Target) -> None:
    response = t.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


def header_limits_agree(t: Target) -> None:
    """Up to nginx's limit the app answers; past it nginx does, never the server."""
    limit = t.header_limit
    near = t.get("/api/info", headers={"X-Big": "a" * (limit - len("X-Big: ") - 2)})
    assert near.status_code == 200 and near.headers["X-Served-By"] == "sample_app"
    over = t.get("/api/info", headers={"X-Big": "a" * limit})
    assert over.status_code == 400 and "X-Served-By" not in over.headers
    long_url = t.get("/" + "a" * (limit - len("GET / HTTP/1.1\r\n")))
    assert long_url.status_code == 404 and long_url.headers["X-Served-By"] == "sample_app"
    too_long = t.get("/" + "a" * limit)
    assert too_long.status_code == 414 and "X-Served-By" not in too_long.headers


def keep_alive_session(t: Target) -> None:
    with requests.Session() as session:
        responses = [session.get(t.url + "/api/info", timeout=10) for _ in range(20)]
    assert all(r.status_code == 200 and r.json()["pid"] for r in responses)


CHECKS: list[Callable[[Target], None]] = [
    home_page, client_address_and_scheme_come_from_nginx, json_api, upload,
    body_limit_is_answered_by_nginx, streaming_arrives_as_it_is_produced,
    static_files_are_served_by_nginx, health, header_limits_agree, keep_alive_session,
]
