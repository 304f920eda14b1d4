"""The sample app as a WSGI callable, checked by wsgiref's PEP 3333 validator (no server)."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from sample_app.app import HTTPError, app, parse_multipart


def call(path: str, method: str = "GET", body: bytes = b"", content_type: str = "",
         query: str = "", scheme: str = "http", **environ: Any) -> tuple[str, dict[str, str], bytes]:
    env: dict[str, Any] = {"SCRIPT_NAME": "", "PATH_INFO": path, "REQUEST_METHOD": method,
                           "QUERY_STRING": query, "wsgi.input": io.BytesIO(body),
                           "wsgi.url_scheme": scheme, **environ}
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    if content_type:
        env["CONTENT_TYPE"] = content_type
    setup_testing_defaults(env)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"], captured["headers"] = status, dict(headers)
        return lambda data: None

    result = validator(app)(env, start_response)
    try:
        data = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    return captured["status"], captured["headers"], data


def multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_home_page_shows_client_address_and_scheme() -> None:
    status, headers, body = call("/", REMOTE_ADDR="203.0.113.7", scheme="https")
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Served-By"] == "sample_app"
    assert b'<strong id="remote-addr">203.0.113.7</strong>' in body
    assert b'<strong id="scheme">https</strong>' in body
    assert b'href="/static/style.css"' in body


def test_api_info() -> None:
    status, headers, body = call("/api/info", query="a=1", REMOTE_ADDR="198.51.100.2",
                                 HTTP_X_FORWARDED_FOR="198.51.100.2")
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    info = json.loads(body)
    assert info["remote_addr"] == "198.51.100.2"
    assert info["scheme"] == "http"
    assert info["query"] == "a=1"
    assert info["forwarded_for"] == "198.51.100.2"


def test_api_echo() -> None:
    status, _, body = call("/api/echo", "POST", b'{"n": [1, 2]}', "application/json")
    assert status == "200 OK"
    assert json.loads(body)["echo"] == {"n": [1, 2]}


def test_api_echo_rejects_bad_json() -> None:
    status, _, body = call("/api/echo", "POST", b"{nope", "application/json")
    assert status == "400 Bad Request" and body.startswith(b"not JSON")


def test_upload_reports_name_size_and_sha256() -> None:
    data = bytes(range(256)) * 100 + b"\r\n--not-the-boundary\r\n"  # binary, with CRLFs inside
    body = multipart("XyZ", [("file", "blob.bin", data), ("note", None, b"hello")])
    status, _, out = call("/upload", "POST", body, "multipart/form-data; boundary=XyZ")
    assert status == "200 OK"
    result = json.loads(out)
    assert result["files"] == [{"field": "file", "filename": "blob.bin", "size": len(data),
                                "content_type": "application/octet-stream",
                                "sha256": hashlib.sha256(data).hexdigest()}]
    assert result["fields"] == {"note": "hello"}
    assert result["body_bytes"] == len(body)


def test_upload_needs_multipart() -> None:
    status, _, _ = call("/upload", "POST", b"x=1", "application/x-www-form-urlencoded")
    assert status == "415 Unsupported Media Type"


@pytest.mark.parametrize("body", [
    b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nno closing delimiter\r\n",
    b"--XyZ\r\nno blank line\r\n--XyZ--\r\n",
])
def test_malformed_multipart(body: bytes) -> None:
    with pytest.raises(HTTPError) as info:
        parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert info.value.status == "400 Bad Request"


def test_stream_is_chunked_and_unbuffered() -> None:
    status, headers, body = call("/stream", query="lines=3&delay=0")
    assert status == "200 OK"
    assert "Content-Length" not in headers
    assert headers["X-Accel-Buffering"] == "no"
    lines = body.decode().splitlines()
    assert [line.split(" at ")[0] for line in lines] == ["line 1 of 3", "line 2 of 3", "line 3 of 3"]


def test_stream_rejects_bad_parameters() -> None:
    assert call("/stream", query="lines=many")[0] == "400 Bad Request"


def test_healthz() -> None:
    status, headers, body = call("/healthz")
    assert (status, body) == ("200 OK", b"ok\n")
    assert headers["Cache-Control"] == "no-store"


def test_static_files_are_not_the_apps() -> None:
    status, headers, _ = call("/static/style.css")
    assert status == "404 Not Found" and headers["X-Served-By"] == "sample_app"


def test_wrong_method() -> None:
    status, headers, _ = call("/api/info", "DELETE")
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert call("/upload", "GET")[1]["Allow"] == "POST"


def test_head_is_get_without_a_body_from_the_server() -> None:
    assert call("/healthz", "HEAD")[0] == "200 OK"
