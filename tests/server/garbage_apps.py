"""Apps that report the cyclic garbage a server leaves in its worker (tests/server/test_garbage.py).

Importing this module makes the worker's garbage collector keep what it finds
(``gc.DEBUG_SAVEALL``) instead of freeing it.  ``GET /garbage`` then collects, answers with the
server's own objects among what was found (``appserver.*`` types, counted by name), and forgets
them; any other request is an ordinary small request that reads its body.
"""

from __future__ import annotations

import collections
import gc
import json
from collections.abc import Callable, Iterable
from typing import Any

gc.set_debug(gc.DEBUG_SAVEALL)


def _report() -> bytes:
    gc.collect()
    ours = collections.Counter(
        type(obj).__qualname__ for obj in gc.garbage
        if type(obj).__module__.startswith("appserver"))
    gc.garbage.clear()
    return json.dumps(ours).encode()


def app(environ: dict[str, Any], start_response: Callable[..., object]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    body = _report() if environ["PATH_INFO"] == "/garbage" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = _report() if scope["path"] == "/garbage" else b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
