"""StatsD from a running server, next to gunicorn 27 running the same app with the same flags:
the same metrics, names and types reach a local UDP socket."""

from __future__ import annotations

import collections
import re
import signal
import socket
import time
from pathlib import Path

from ..server.harness import HERE, Gunicorn, Launcher, free_port, listening, wait_for
from .conftest import datagrams

APP = "apps:hello"


def shape(datagrams: list[str]) -> collections.Counter[str]:
    """Durations vary: keep the name, the type and the tags."""
    return collections.Counter(re.sub(r"^(\S*gunicorn\.request\.duration):[0-9.]+", r"\1:N", d)
                               for d in datagrams)


def drive(port: int) -> None:
    import http.client

    for path in ("/", "/", "/a", "/hang-not"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()


FLAGS = ["--statsd-prefix", "web", "--dogstatsd-tags", "env:test"]


def test_request_and_worker_metrics_match_gunicorn(launcher: Launcher, gunicorn: Gunicorn,
                                                   udp: socket.socket, workdir: Path) -> None:
    target = f"127.0.0.1:{udp.getsockname()[1]}"
    ours = launcher.start("-k", "sync", "--statsd-host", target, *FLAGS, bind="tcp", workers=2,
                          app=APP)
    assert ours.port is not None
    drive(ours.port)
    ours.signal(signal.SIGTERM)
    ours.wait_exit(20)
    mine = datagrams(udp)

    port = free_port()
    proc = gunicorn.start("-w", "2", "-b", f"127.0.0.1:{port}", "--statsd-host", target, *FLAGS,
                          APP, cwd=workdir, env={"PYTHONPATH": str(HERE)})

    wait_for(lambda: listening(port), 20, "gunicorn to listen")
    time.sleep(1)  # both workers booted
    drive(port)
    assert gunicorn.stop(proc, 20) == 0
    theirs = datagrams(udp)

    requests = {d for d in shape(mine) if not d.startswith("web.gunicorn.workers")}
    assert requests == {d for d in shape(theirs) if not d.startswith("web.gunicorn.workers")}
    # Every request once in each metric: the 4 above and the launcher's readiness probe.
    assert shape(mine)["web.gunicorn.requests:1|c|@1.0|#env:test"] == 5
    assert shape(mine)["web.gunicorn.request.status.200:1|c|@1.0|#env:test"] == 5
    assert shape(mine)["web.gunicorn.request.duration:N|ms|#env:test"] == 5
    # gunicorn sends the worker gauge on every turn of its loop; we send it whenever the number
    # changes (1 and 2 while they boot, down to 0 at the stop): the same gauge, as it moves.
    workers = {d for d in mine if ".workers:" in d}
    assert "web.gunicorn.workers:2|g|#env:test" in workers
    assert "web.gunicorn.workers:2|g|#env:test" in theirs
    assert workers <= {f"web.gunicorn.workers:{n}|g|#env:test" for n in range(3)}
