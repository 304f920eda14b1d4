"""The app server's responses carry no header the app did not set, except the documented ones.

On every worker class, an app sets a known header set (repeats, odd case, cookies, its own Date,
hop-by-hop fields it must not send) on each way of answering -- a sized body, a list, a stream,
HEAD, 204, 304, ``write()``, a file -- for HTTP/1.1 and HTTP/1.0; the test diffs the response
headers against what the app set.  The app's headers must arrive unchanged and in order (less
the hop-by-hop ones), and what the server added must be exactly what docs/operations.md
("Headers the server adds") says for that case.  The responses the server writes itself (a 400,
a 500) are checked against the same section.

This module is also the app: the server imports ``tests.reliability.test_headers:app``, and on
``-k asgi`` its twin ``asgi_app``, which sends the same headers (names as written here, so the
diff holds them to "unchanged"): a sized body is one ``http.response.body`` message with the
app's Content-Length, a list one message without it (the server sizes it), a stream two messages
with ``more_body``; ``write()`` maps to a sized body sent in two messages; ``wsgi.file_wrapper``
maps to the ``http.response.pathsend`` extension (the server sizes the file).
"""

from __future__ import annotations

import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest

from appserver.testing import AppServerProcess, free_port
from tests.reliability.apps import Receive, Send, lifespan
from tests.reliability.common import WORKER_CLASSES, app_for, selected_classes
from tests.reliability.report import Recorder

REPO = Path(__file__).resolve().parents[2]

# What the app sets on every answer (besides what a case adds).
APP_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Set-Cookie", "a=1; Path=/"),
    ("Set-Cookie", "b=2; Path=/; HttpOnly"),
    ("ETag", '"v1"'),
    ("Vary", "Accept-Encoding"),
    ("X-Request-Id", "4f1c"),
    ("x-lower-case", "Kept As Sent"),
]
APP_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"
HOP_BY_HOP = [("Connection", "keep-alive"), ("Keep-Alive", "timeout=99"),
              ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("TE", "trailers"),
              ("Trailer", "X-Sum"), ("Proxy-Authenticate", "Basic")]
BODY = b"hello, headers\n"


# ---- the app --------------------------------------------------------------------------------


def _stream() -> Iterator[bytes]:
    yield b"hello, "
    yield b"headers\n"


def _route(path: str) -> tuple[str, list[tuple[str, str]], Any]:
    """(status, headers, body) for a path; the body is what the app returns."""
    sized = [("Content-Length", str(len(BODY)))]
    if path == "/sized":
        return "200 OK", APP_HEADERS + sized, [BODY]
    if path == "/list":
        return "200 OK", list(APP_HEADERS), [b"hello, ", b"headers\n"]
    if path == "/stream":
        return "200 OK", list(APP_HEADERS), _stream()
    if path == "/dated":
        return "200 OK", APP_HEADERS + [("Date", APP_DATE)], [BODY]
    if path == "/hop-by-hop":
        return "200 OK", APP_HEADERS + HOP_BY_HOP, [BODY]
    if path == "/no-content":
        return "204 No Content", APP_HEADERS[1:], []
    if path == "/not-modified":
        return "304 Not Modified", APP_HEADERS[1:], []
    if path == "/close":
        return "200 OK", APP_HEADERS + [("Connection", "close")], [BODY]
    if path == "/raise":
        raise RuntimeError("the app fails before its response (a test)")
    return "404 Not Found", [("Content-Type", "text/plain")], [b"no such route\n"]


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/write":
        write = start_response("200 OK", APP_HEADERS + [("Content-Length", str(len(BODY)))])
        write(BODY)
        return []
    if path == "/file":
        handle = tempfile.TemporaryFile()
        handle.write(BODY)
        handle.seek(0)
        start_response("200 OK", list(APP_HEADERS))
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle)
        return wrapper
    status, headers, body = _route(path)
    start_response(status, headers)
    return body  # type: ignore[no-any-return]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI twin of :func:`app` (see the module's docstring for the mapping)."""
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    path = scope["path"]
    if path == "/file":
        with tempfile.NamedTemporaryFile() as handle:
            handle.write(BODY)
            handle.flush()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                    for k, v in APP_HEADERS]})
            await send({"type": "http.response.pathsend", "path": handle.name})
        return None
    if path == "/write":
        status = "200 OK"
        headers = APP_HEADERS + [("Content-Length", str(len(BODY)))]
        body: list[bytes] = [b"hello, ", b"headers\n"]
    else:
        status, headers, returned = _route(path)
        body = list(returned)
        if path == "/list":
            body = [b"".join(body)]  # one message: the server knows the whole body
    await send({"type": "http.response.start", "status": int(status.split()[0]),
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    for index, piece in enumerate(body or [b""]):
        await send({"type": "http.response.body", "body": piece,
                    "more_body": index < len(body) - 1})


# ---- the cases ------------------------------------------------------------------------------

# name: (request, what the app set, what the server adds on a class that keeps connections
# alive; ``None`` values: any value).  The sync class closes every connection: it adds
# "Connection: close" where the others add nothing or "Connection: keep-alive".
H = "Host: t\r\n"
CHUNKED = ("Transfer-Encoding", "chunked")
CLOSE = ("Connection", "close")
DATE = ("Date", None)
LENGTH = ("Content-Length", str(len(BODY)))

CASES: dict[str, tuple[str, list[tuple[str, str]], list[tuple[str, str | None]]]] = {
    "sized body": (f"GET /sized HTTP/1.1\r\n{H}\r\n", APP_HEADERS + [LENGTH], [DATE]),
    "list body": (f"GET /list HTTP/1.1\r\n{H}\r\n", APP_HEADERS, [LENGTH, DATE]),
    "streamed body": (f"GET /stream HTTP/1.1\r\n{H}\r\n", APP_HEADERS, [CHUNKED, DATE]),
    "write()": (f"GET /write HTTP/1.1\r\n{H}\r\n", APP_HEADERS + [LENGTH], [DATE]),
    "file_wrapper": (f"GET /file HTTP/1.1\r\n{H}\r\n", APP_HEADERS, [LENGTH, DATE]),
    "HEAD": (f"HEAD /list HTTP/1.1\r\n{H}\r\n", APP_HEADERS, [LENGTH, DATE]),
    "204": (f"GET /no-content HTTP/1.1\r\n{H}\r\n", APP_HEADERS[1:], [DATE]),
    "304": (f"GET /not-modified HTTP/1.1\r\n{H}\r\n", APP_HEADERS[1:], [DATE]),
    "app's own Date": (f"GET /dated HTTP/1.1\r\n{H}\r\n", APP_HEADERS + [("Date", APP_DATE)],
                       [LENGTH]),
    "app's hop-by-hop headers": (f"GET /hop-by-hop HTTP/1.1\r\n{H}\r\n", APP_HEADERS,
                                 [LENGTH, DATE]),
    "app's Connection: close": (f"GET /close HTTP/1.1\r\n{H}\r\n", APP_HEADERS, [LENGTH, DATE, CLOSE]),
    "HTTP/1.0": ("GET /list HTTP/1.0\r\n\r\n", APP_HEADERS, [LENGTH, DATE, CLOSE]),
    "HTTP/1.0 keep-alive": ("GET /list HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", APP_HEADERS,
                            [LENGTH, DATE, ("Connection", "keep-alive")]),
    "HTTP/1.0 streamed": ("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", APP_HEADERS,
                          [DATE, CLOSE]),
    # The server's own responses: nothing of the app's.
    "server's 400": ("GET /sized HTTP/1.1\r\n\r\n", [],
                     [DATE, ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", None),
                      CLOSE]),
    "server's 500": (f"GET /raise HTTP/1.1\r\n{H}\r\n", [],
                     [DATE, ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", None),
                      CLOSE]),
}


def expected_added(name: str, worker_class: str) -> list[tuple[str, str | None]]:
    added = [item for item in CASES[name][2] if item[0] != "Connection"]
    connection = [value for key, value in CASES[name][2] if key == "Connection"]
    if worker_class == "sync" or connection == ["close"]:
        added.append(CLOSE)  # sync never keeps a connection alive
    elif connection:
        added.append(("Connection", connection[0]))
    return added


# ---- the server -----------------------------------------------------------------------------


def _start(worker_class: str, tmp: Path) -> tuple[AppServerProcess, str]:
    address = f"127.0.0.1:{free_port()}"
    process = AppServerProcess([*WORKER_CLASSES[worker_class], "-w", "1", "-b", address,
                                "--graceful-timeout", "5",
                                app_for(worker_class, "tests.reliability.test_headers:app")],
                               log_path=tmp / f"{worker_class}.log", cwd=REPO,
                               env={"PYTHONPATH": str(REPO)})
    try:
        process.start(wait_for=[address], workers=1, timeout=60)
    except BaseException:
        process.stop()
        raise
    return process, address


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A one-worker server per class on a loopback port, all started at once."""
    tmp = tmp_path_factory.mktemp("headers")
    classes = selected_classes()
    with ThreadPoolExecutor(len(classes)) as pool:
        futures = {name: pool.submit(_start, name, tmp) for name in classes}
        wait(futures.values())
    started = {name: f.result() for name, f in futures.items() if f.exception() is None}
    try:
        for future in futures.values():
            future.result()  # re-raise the first start-up failure
        yield {name: address for name, (_, address) in started.items()}
    finally:
        with ThreadPoolExecutor(len(classes)) as pool:
            codes = dict(zip(started, pool.map(lambda item: item[0].stop(), started.values()),
                             strict=True))
        failed = {name: code for name, code in codes.items() if code != 0}
        assert not failed, "\n".join(f"{name} exited with {code}:\n{started[name][0].log_text()[-2000:]}"
                                      for name, code in failed.items())


def fetch(address: str, request: str, timeout: float = 10.0) -> tuple[int, list[tuple[str, str]]]:
    """The status and header list (in order) of the response to ``request``."""
    host, _, port = address.rpartition(":")
    data = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request.encode("latin-1"))
        while b"\r\n\r\n" not in data:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *lines = head.split("\r\n")
    assert re.fullmatch(r"HTTP/1\.[01] \d{3} .*", status_line), head
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        assert sep and name == name.strip(), f"malformed header line {line!r}"
        headers.append((name, value.strip()))
    return int(status_line.split()[1]), headers


def diff(got: list[tuple[str, str]], sent: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``got`` less ``sent``, which must appear in ``got`` unchanged and in order."""
    rest = list(got)
    position = 0
    for item in sent:
        assert item in rest[position:], f"the app's header {item} is missing or out of order: {got}"
        position = rest.index(item, position)
        del rest[position]
    return rest


def _matches(added: list[tuple[str, str]], expected: list[tuple[str, str | None]]) -> bool:
    if len(added) != len(expected):
        return False
    remaining = list(added)
    for name, value in expected:
        found = [item for item in remaining if item[0] == name and value in (None, item[1])]
        if not found:
            return False
        remaining.remove(found[0])
    return True


# ---- the record and the documentation -------------------------------------------------------

_ADDED: dict[tuple[str, bool], set[str]] = {}  # (class, the server's own response)


def _label(name: str, value: str) -> str:
    return f"{name}: {value}" if name in ("Connection", "Transfer-Encoding") else name


def documented_headers() -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    match = re.search(r"^## Headers the server adds\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/operations.md has no 'Headers the server adds' section"
    return match.group(1)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("worker_class", selected_classes())
def test_added_headers(servers: dict[str, str], reliability: Recorder, worker_class: str,
                       name: str) -> None:
    address = servers[worker_class]
    request, sent, _ = CASES[name]
    status, got = fetch(address, request)
    added = diff(got, sent)
    expected = expected_added(name, worker_class)

    own = name.startswith("server's")
    labels = _ADDED.setdefault((worker_class, own), set())
    labels.update(_label(key, value) for key, value in added)
    to_app = ", ".join(sorted(_ADDED.get((worker_class, False), ())))
    to_own = ", ".join(sorted(_ADDED.get((worker_class, True), ())))
    reliability.record("headers", **{"class": worker_class,
                                     "added headers": f"{to_app} (its own error responses: {to_own})"})

    assert status < 400 or name.startswith("server's"), (status, got)
    assert _matches(added, expected), f"{name}: the server added {added}, expected {expected}"
    section = documented_headers()
    for key, value in added:
        assert f"`{_label(key, value)}`" in section or f"`{key}`" in section \
            or f"`{key}: {value}`" in section, f"{key}: {value} is not documented in docs/operations.md"
    # Singleton fields appear once, however the response was made.
    for singleton in ("date", "content-length", "content-type", "connection"):
        assert [k.lower() for k, _ in got].count(singleton) <= 1, got
