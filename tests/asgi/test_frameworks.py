"""Real Starlette and FastAPI apps on ``-k asgi``, straight to the socket (httpx over TCP and a
unix socket): JSON, StreamingResponse, request.stream() uploads, multipart forms, background
tasks, lifespan state, and the header rule (names with '_' never reach the app)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.harness import Launcher, Server, wait_for

from .conftest import ENV

FRAMEWORKS = ["frameworks:starlette_app", "frameworks:fastapi_app"]
TRANSPORTS = ["unix", "tcp"]


@pytest.fixture(scope="module")
def mark_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marks")


@pytest.fixture(scope="module", params=FRAMEWORKS)
def server(request: pytest.FixtureRequest, module_launcher: Launcher, mark_dir: Path) -> Server:
    name = request.param.split(":")[1]
    return module_launcher.start("-k", "uvicorn.workers.UvicornWorker", "--timeout", "5",
                                 "--graceful-timeout", "3", app=request.param, bind="both",
                                 workers=1, env={**ENV, "ASGI_BG_MARK": str(mark_dir / name)})


@pytest.fixture(params=TRANSPORTS)
def client(request: pytest.FixtureRequest, server: Server) -> Iterator[httpx.Client]:
    if request.param == "unix":
        transport = httpx.HTTPTransport(uds=server.unix_path)
        with httpx.Client(transport=transport, base_url="http://app", timeout=10) as c:
            yield c
    else:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
            yield c


def test_json_round_trip_with_lifespan_state(client: httpx.Client) -> None:
    reply = client.post("/json", json={"a": [1, 2, {"b": "ü"}]})
    assert reply.status_code == 200
    assert reply.json() == {"got": {"a": [1, 2, {"b": "ü"}]}, "db": "connected"}


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream", params={"n": 2000}) as reply:
        assert reply.headers["transfer-encoding"] == "chunked"
        body = b"".join(reply.iter_bytes())
    assert body == b"".join(b"%d\n" % i for i in range(2000))


def test_large_upload_read_with_request_stream(client: httpx.Client) -> None:
    data = os.urandom(3 << 20)
    reply = client.post("/upload", content=data)
    result = reply.json()
    assert result["total"] == len(data) and result["pieces"] >= 1
    assert result["sha256"] == hashlib.sha256(data).hexdigest()


def test_form_and_file_upload(client: httpx.Client) -> None:
    reply = client.post("/form", data={"name": "report"},
                        files={"file": ("r.bin", os.urandom(200_000), "application/octet-stream")})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"name": "report", "filename": "r.bin", "size": 200_000}


def test_background_task_runs_after_the_response(client: httpx.Client, server: Server,
                                                 mark_dir: Path) -> None:
    mark = mark_dir / server.argv[-1].split(":")[1]
    before = mark.read_text().count("\n") if mark.exists() else 0
    assert client.get("/background").status_code == 200
    wait_for(lambda: mark.exists() and mark.read_text().count("\n") > before, 5,
             "the background task")


def test_keep_alive_and_many_requests(client: httpx.Client) -> None:
    for _ in range(20):
        assert client.get("/").status_code == 200


@pytest.mark.parametrize("server", ["frameworks:starlette_app"], indirect=True)
def test_underscored_header_never_reaches_starlette(server: Server) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        reply = c.get("/headers", headers={"X_Real_Ip": "6.6.6.6", "X-Real-Ip": "1.2.3.4"})
    headers = reply.json()["headers"]
    assert ["x-real-ip", "1.2.3.4"] in headers
    assert not any("_" in name for name, _ in headers)


@pytest.mark.parametrize("server", ["frameworks:fastapi_app"], indirect=True)
def test_fastapi_sync_endpoint(server: Server) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        assert c.get("/sync").json() == {"sync": "ok"}
