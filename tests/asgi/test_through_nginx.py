"""Real ASGI frameworks, unchanged, behind the real nginx rendered from bundle settings with
``app.interface = "asgi"``: Starlette and FastAPI (frameworks.py), Django's ASGI handler
(djangoproject/: async views, the ORM through sync_to_async, SQLite) and Quart (quart_app.py).

One local stack per framework (nginx -> unix socket -> the asyncio class): JSON round trips, a
streamed response, a large upload read as a stream, a form with a file, lifespan state, and for
Django the ORM.  (Straight to the socket, without nginx: test_frameworks.py.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import httpx
import pytest

from appserver.bundle.tools import find_nginx
from appserver.testing import Stack, start_stack

from ..bundle.conftest import REPO

FRAMEWORKS = {
    "starlette": "frameworks:starlette_app",
    "fastapi": "frameworks:fastapi_app",
    "django": "djangoproject.asgi:application",
    "quart": "quart_app:app",
}
# The apps' own code needs these (the test extra has them).
NEEDS = {"starlette": "starlette", "fastapi": "fastapi", "django": "django", "quart": "quart"}
UPLOAD = 8 << 20


@pytest.fixture(scope="module", params=list(FRAMEWORKS))
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Stack]]:
    name = request.param
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    pytest.importorskip(NEEDS[name])
    settings = {"app": {"interface": "asgi", "directory": "tests/asgi"},
                "server": {"workers": 1, "graceful_timeout": 5},
                "nginx": {"client_max_body_size": "32m"}}
    with start_stack(FRAMEWORKS[name], directory=REPO, settings=settings,
                     run_dir=tmp_path_factory.mktemp(name)) as stack:
        yield name, stack
    assert stack.stopped is not None and stack.stopped.graceful, stack.log()


@pytest.fixture
def client(served: tuple[str, Stack]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1].url, timeout=20) as c:
        yield c


def test_the_asgi_app_runs_on_the_asyncio_class(served: tuple[str, Stack],
                                                client: httpx.Client) -> None:
    config = (served[1].run_dir / "appserver.toml").read_text()
    assert 'worker_class = "asyncio"' in config and 'interface = "asgi"' in config
    reply = client.get("/")
    assert reply.status_code == 200 and reply.headers["server"] == "nginx"


def test_json_round_trip(client: httpx.Client) -> None:
    document = {"a": [1, 2, {"b": "ü"}], "n": None, "f": 1.5}
    reply = client.post("/json", json=document)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["got"] == document


def test_lifespan_state_reaches_the_requests(served: tuple[str, Stack],
                                             client: httpx.Client) -> None:
    name, stack = served
    db = client.post("/json", json={}).json()["db"]
    if name == "django":
        # Django's ASGI handler refuses the lifespan scope; asgi_lifespan = "auto" serves it anyway.
        assert db is None
        assert "lifespan" in stack.log().lower()
    else:
        assert db == "connected"


def test_streaming_response(client: httpx.Client) -> None:
    with client.stream("GET", "/stream", params={"n": 20000}) as reply:
        assert reply.status_code == 200
        assert reply.headers["transfer-encoding"] == "chunked"
        body = b"".join(reply.iter_bytes())
    assert body == b"".join(b"%d\n" % i for i in range(20000))


def test_large_upload_read_as_a_stream(client: httpx.Client) -> None:
    data = os.urandom(UPLOAD)
    reply = client.post("/upload", content=data,
                        headers={"Content-Type": "application/octet-stream"})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert (result["total"], result["sha256"]) == (UPLOAD, hashlib.sha256(data).hexdigest())
    assert result["pieces"] > 1  # it arrived in pieces, not as one buffer


def test_form_and_file_upload(client: httpx.Client) -> None:
    data = os.urandom(300_000)
    reply = client.post("/form", data={"name": "Zoë"}, files={"file": ("blob.bin", data)})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"name": "Zoë", "filename": "blob.bin", "size": len(data)}


def test_django_orm_through_sync_to_async(served: tuple[str, Stack],
                                          client: httpx.Client) -> None:
    if served[0] != "django":
        pytest.skip("Django only")
    for text in ("first", "second"):
        assert client.post("/notes", json={"text": text}).status_code == 200
    assert client.get("/notes").json() == {"count": 2, "texts": ["first", "second"]}
