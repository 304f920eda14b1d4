"""Real ASGI frameworks, unchanged, behind the real nginx rendered from bundle settings with
``app.interface = "asgi"``: Starlette and FastAPI (frameworks.py), Django's ASGI handler
(djangoproject/: async views, the ORM through sync_to_async, SQLite) and Quart (quart_app.py).

One local stack per framework (nginx -> unix socket -> the asyncio class), started once and
shared by the module's tests: JSON round trips, a streamed response, a large upload read as a
stream, a form with a file, lifespan state, ``http.disconnect`` reaching the app when the client
leaves a long stream (nginx passes the abort on), a WebSocket echo through
``nginx.websocket_locations``, and for Django the ORM.  A lifespan startup that raises
(failing_startup.py) stops the server with the app's message; that stack never starts nginx.

Django: no WebSocket test (it needs Channels, which is not installed) and no startup-failure test
(its ASGI handler has no lifespan).  (Straight to the socket, without nginx: test_frameworks.py.)
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from appserver.bundle.tools import find_nginx
from appserver.testing import Stack, StackError, start_stack

from ..bundle.conftest import REPO

FRAMEWORKS = {
    "starlette": "frameworks:starlette_app",
    "fastapi": "frameworks:fastapi_app",
    "django": "djangoproject.asgi:application",
    "quart": "quart_app:app",
}
# The apps' own code needs these (the test extra has them).
NEEDS = {"starlette": "starlette", "fastapi": "fastapi", "django": "django", "quart": "quart"}
WEBSOCKETS = ["starlette", "fastapi", "quart"]  # Django's need Channels (not installed)
LIFESPANS = ["starlette", "fastapi", "quart"]  # Django's ASGI handler has no lifespan
UPLOAD = 8 << 20
SETTINGS = {"app": {"interface": "asgi", "directory": "tests/asgi"},
            "server": {"workers": 1, "graceful_timeout": 5},
            "nginx": {"client_max_body_size": "32m", "websocket_locations": ["/ws/"]}}
# The long streams write "disconnect <framework>" here when they see http.disconnect.
MARK = "ASGI_DISCONNECT_MARK"


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Stack]]:
    """The stack of a framework, started on first use and stopped (gracefully) at the end."""
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    started: dict[str, Stack] = {}
    mark = tmp_path_factory.mktemp("marks") / "disconnect.log"
    previous = os.environ.get(MARK)
    os.environ[MARK] = str(mark)  # the servers inherit the environment

    def stack_for(name: str) -> Stack:
        pytest.importorskip(NEEDS[name])
        if name not in started:
            started[name] = start_stack(FRAMEWORKS[name], directory=REPO, settings=SETTINGS,
                                        run_dir=tmp_path_factory.mktemp(name)).__enter__()
        return started[name]

    try:
        yield stack_for
    finally:
        if previous is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = previous
        stopped = {name: stack.stop() for name, stack in started.items()}
    for name, result in stopped.items():
        assert result.graceful, started[name].log()


@pytest.fixture(params=list(FRAMEWORKS))
def served(request: pytest.FixtureRequest,
           stacks: Callable[[str], Stack]) -> tuple[str, Stack]:
    return request.param, stacks(request.param)


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


def test_django_orm_through_sync_to_async(stacks: Callable[[str], Stack]) -> None:
    with httpx.Client(base_url=stacks("django").url, timeout=20) as client:
        for text in ("first", "second"):
            assert client.post("/notes", json={"text": text}).status_code == 200
        assert client.get("/notes").json() == {"count": 2, "texts": ["first", "second"]}


def test_http_disconnect_reaches_a_long_stream(served: tuple[str, Stack]) -> None:
    """The client leaves mid-stream; nginx passes the abort on (proxy_ignore_client_abort is
    off) and the app, waiting with nothing to send, learns it from http.disconnect."""
    name, stack = served
    conf = (stack.run_dir / "nginx.conf").read_text()
    assert "proxy_ignore_client_abort on" not in conf
    mark = Path(os.environ[MARK])
    # Not compressed (application/octet-stream), not buffered (X-Accel-Buffering: no): the
    # first part arrives at once.
    with httpx.Client(base_url=stack.url, timeout=10) as client, \
            client.stream("GET", "/until-disconnect") as reply:
        assert reply.status_code == 200
        received = 0
        for chunk in reply.iter_raw():
            received += len(chunk)
            if received >= 16384:
                break
    # The connection is closed here, the response unfinished.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if mark.exists() and f"disconnect {name}" in mark.read_text().split("\n"):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"{name} never saw http.disconnect:\n{stack.log()[-3000:]}")


@pytest.mark.parametrize("name", WEBSOCKETS)
def test_websocket_echo_through_nginx(stacks: Callable[[str], Stack], name: str) -> None:
    stack = stacks(name)
    url = stack.url.replace("http://", "ws://")
    with connect(f"{url}/ws/echo", open_timeout=10) as ws:
        for text in ("one", "zwei ü", "x" * 70000):
            ws.send(text)
            assert ws.recv(10) == f"echo: {text}"
    # An ordinary request in the WebSocket location still works (no upgrade passed on).
    assert httpx.get(f"{stack.url}/", timeout=10).status_code == 200


@pytest.mark.parametrize("name", LIFESPANS)
def test_a_failing_lifespan_startup_stops_the_server(tmp_path: Path, name: str) -> None:
    if find_nginx() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    pytest.importorskip(NEEDS[name])
    with pytest.raises(StackError, match="exited with status 4 before it was ready"):
        start_stack(f"failing_startup:{name}_app", directory=REPO, settings=SETTINGS,
                    run_dir=tmp_path)
    log = (tmp_path / "appserver.log").read_text()
    assert "the database is unreachable" in log, log
