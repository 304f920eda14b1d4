"""The hooks of the master's and a worker's rarer moments, with real signals: on_reload (HUP),
worker_abort (a worker past its timeout), pre_exec (USR2, in the child before it becomes the new
master) and worker_int (QUIT).  One ``gunicorn.conf.py`` records each call with what a hook
would use; ``appserver serve`` and gunicorn 27 run the same scenario and must record the same.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from ..server.harness import Launcher, alive, free_port, signal_pid, wait_for
from .conftest import Gunicorn, next_run_dir

APP = '''
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        time.sleep(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(__import__("os").getpid()).encode()]
'''

CONF = '''
import os

bind = "127.0.0.1:" + os.environ["PORT"]
wsgi_app = "myapp:app"
workers = 1
timeout = 3
graceful_timeout = 5
RECORD = os.environ["HOOK_RECORD"]


def _record(*parts):
    with open(RECORD, "a") as fh:
        fh.write(" ".join(str(part) for part in parts) + "\\n")


def post_worker_init(worker):
    _record("post_worker_init", worker.pid)


def worker_exit(server, worker):
    _record("worker_exit", worker.pid)


def on_reload(server):
    _record("on_reload", server.pid == os.getpid(), server.cfg.workers)


def worker_abort(worker):
    _record("worker_abort", worker.pid, worker.pid == os.getpid())


def worker_int(worker):
    _record("worker_int", worker.pid, worker.pid == os.getpid())


def pre_exec(server):
    # In the forked child that is about to become the new master.
    _record("pre_exec", os.getpid(), server.pid != os.getpid())
'''


def records(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def events(path: Path, name: str) -> list[list[str]]:
    return [line for line in records(path) if line[0] == name]


def get(port: int, target: str = "/", timeout: float = 10) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", target)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def hang(port: int) -> None:
    """A request the worker never finishes: the master must abort the worker."""
    try:
        get(port, "/hang", timeout=20)
    except (OSError, http.client.HTTPException):
        pass  # the connection dies with the worker


def scenario(record: Path, port: int, master: int) -> collections.Counter[str]:
    """HUP, a hung request, USR2 (then stop the new master), QUIT: what the hooks saw."""
    def booted() -> int:
        return len(events(record, "post_worker_init"))

    def show() -> str:
        return "\n".join(" ".join(line) for line in records(record))

    wait_for(lambda: booted() == 1, 20, "the first worker", details=show)
    first = events(record, "post_worker_init")[0][1]
    os.kill(master, signal.SIGHUP)
    wait_for(lambda: booted() == 2, 20, "a worker after HUP", details=show)
    wait_for(lambda: ["worker_exit", first] in records(record), 20, "the old worker to leave",
             details=show)
    serving = int(get(port))

    client = threading.Thread(target=hang, args=(port,), daemon=True)
    client.start()
    wait_for(lambda: events(record, "worker_abort"), 30, "worker_abort", details=show)
    client.join(25)
    wait_for(lambda: booted() == 3, 20, "a worker after the abort", details=show)

    os.kill(master, signal.SIGUSR2)
    wait_for(lambda: events(record, "pre_exec"), 20, "pre_exec", details=show)
    new_master = int(events(record, "pre_exec")[0][1])
    # The new master boots its worker (its own post_worker_init), then leaves again.
    wait_for(lambda: booted() == 4, 30, "the new master's worker", details=show)
    signal_pid(new_master, signal.SIGTERM)
    wait_for(lambda: not alive(new_master), 20, "the new master to stop")

    before_quit = int(get(port))
    os.kill(master, signal.SIGQUIT)
    wait_for(lambda: events(record, "worker_int"), 20, "worker_int", details=show)

    seen: collections.Counter[str] = collections.Counter()
    for line in records(record):
        name = line[0]
        if name == "on_reload":
            seen[" ".join(line)] += 1
        elif name == "worker_abort":
            seen[f"worker_abort of the serving worker {int(line[1]) == serving} {line[2]}"] += 1
        elif name == "pre_exec":
            seen[f"pre_exec in a child {line[2]}"] += 1
        elif name == "worker_int":
            seen[f"worker_int of the serving worker {int(line[1]) == before_quit} {line[2]}"] += 1
    return seen


EXPECTED = collections.Counter([
    "on_reload True 1",
    "worker_abort of the serving worker True True",
    "pre_exec in a child True",
    "worker_int of the serving worker True True",
])


def run_scenario(directory: Path, start: Callable[[dict[str, str]], int]
                 ) -> collections.Counter[str]:
    (directory / "myapp.py").write_text(APP)
    (directory / "gunicorn.conf.py").write_text(CONF)
    port = free_port()
    record = directory / "hooks.txt"
    master = start({"PORT": str(port), "HOOK_RECORD": str(record)})
    return scenario(record, port, master)


def test_rare_hooks_are_called_at_gunicorns_moments(launcher: Launcher, gunicorn: Gunicorn,
                                                    workdir: Path) -> None:
    def ours(env: dict[str, str]) -> int:
        return launcher.start(bind="none", workers=None, app="", wait=False, env=env).pid

    def theirs(env: dict[str, str]) -> int:
        return gunicorn.start(cwd=reference, env=env).pid

    mine = run_scenario(next_run_dir(launcher), ours)
    reference = workdir / "gunicorn"
    reference.mkdir()
    assert run_scenario(reference, theirs) == EXPECTED
    assert mine == EXPECTED
