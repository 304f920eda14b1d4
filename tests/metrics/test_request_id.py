"""The access log finds a request seen in the metrics: its duration and nginx's request id
(``X-Request-ID: $request_id``), with gunicorn's atoms and in the JSON lines."""

from __future__ import annotations

import json

import pytest

from tests.server.harness import Launcher, wait_for

from .scrape import CLASSES, ENV

FORMAT = '%(r)s %(s)s rid=%({x-request-id}i)s took=%(L)s'


@pytest.mark.parametrize("kind", ["sync", "asgi"])
@pytest.mark.parametrize("as_json", [False, True], ids=["format", "json"])
def test_request_id_and_duration(launcher: Launcher, kind: str, as_json: bool) -> None:
    log = launcher.workdir / f"access-{kind}-{as_json}.log"
    style = ["--access-log-json"] if as_json else ["--access-logformat", FORMAT]
    app = "metrics_apps:asgi_app" if kind == "asgi" else "metrics_apps:app"
    server = launcher.start(*CLASSES[kind], "--no-control-socket", "--access-logfile", str(log),
                            *style, app=app, env=ENV, workers=1)
    conn = server.connection()
    try:
        conn.request("GET", "/slow?t=0.2", headers={"X-Request-ID": "0123abcd"})
        assert conn.getresponse().read()
    finally:
        conn.close()

    def line() -> str | None:
        found = [x for x in log.read_text().splitlines() if "0123abcd" in x] if log.exists() else []
        return found[0] if found else None

    text = wait_for(line, 10, "the access log line")
    # The app sleeps 0.2 s; uvloop's timers have a resolution of 1 ms, so the ASGI app's
    # asyncio.sleep(0.2) may end up to 1 ms early by the server's clock.
    least = 0.2 - (0.001 if kind == "asgi" else 0.0)
    if as_json:
        entry = json.loads(text)
        assert entry["request_id"] == "0123abcd" and entry["duration_ms"] >= least * 1000
    else:
        assert text.startswith("GET /slow?t=0.2 HTTP/1.1 200 rid=0123abcd took=")
        assert float(text.rsplit("took=", 1)[1]) >= least
