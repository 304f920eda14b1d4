"""Server hooks in real deployments: a Django-style ``gunicorn.conf.py`` whose hooks record
their calls to a file, run by ``appserver serve`` and by gunicorn 27 with the same scenario
(boot, one request, TTIN, TERM); the records must match.

Deliberate differences (see docs/migrating-from-gunicorn.md): gunicorn dies of an exception in
pre_fork, child_exit, nworkers_changed or on_reload; we log it and keep serving.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
from pathlib import Path

import pytest

from ..server.harness import Launcher, Server, free_port, wait_for
from .conftest import Gunicorn, appserver_run, next_run_dir

REPO = Path(__file__).resolve().parents[2]

APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''

CONF = '''
import multiprocessing
import os

# Django-style: as many workers as the machine allows, capped by the platform.
workers = min(multiprocessing.cpu_count() * 2 + 1, int(os.environ.get("MAX_WORKERS", "2")))
bind = "127.0.0.1:" + os.environ["PORT"]
wsgi_app = "myapp:app"
RECORD = os.environ["HOOK_RECORD"]
db_connection = None


def _record(*parts):
    with open(RECORD, "a") as fh:
        fh.write(" ".join(str(part) for part in parts) + "\\n")


def on_starting(server):
    _record("on_starting", server.pid == os.getpid())


def when_ready(server):
    server.log.info("ready with %s workers", server.num_workers)
    _record("when_ready", server.cfg.workers, server.cfg.keepalive)


def pre_fork(server, worker):
    _record("pre_fork", worker.pid)


def post_fork(server, worker):
    global db_connection
    db_connection = ("connection of", os.getpid())  # never share the master's connection
    _record("post_fork", worker.pid == os.getpid(), worker.ppid == server.pid, worker.age > 0)


def post_worker_init(worker):
    _record("post_worker_init", worker.alive, db_connection[1] == os.getpid())


def pre_request(worker, req):
    _record("pre_request", req.method, req.path, req.query, ("X-TRACE", "t1") in req.headers)


def post_request(worker, req, environ, resp):
    _record("post_request", req.path, resp.status, environ["PATH_INFO"])


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new_value, old_value)


def child_exit(server, worker):
    _record("child_exit")


def worker_exit(server, worker):
    _record("worker_exit", worker.pid == os.getpid())


def on_exit(server):
    _record("on_exit")
'''

SIGNATURES = {"on_starting": "server", "when_ready": "server", "post_fork": "server, worker",
              "post_worker_init": "worker", "pre_request": "worker, req",
              "post_request": "worker, req, environ, resp"}


def failing_hook(name: str, message: str) -> str:
    """CONF with the hook ``name`` replaced by one that raises."""
    return CONF.replace(f"def {name}(", f"def _unused_{name}(") + (
        f"\n\ndef {name}({SIGNATURES[name]}):\n    raise RuntimeError({message!r})\n")


def records(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def count(path: Path, event: str) -> int:
    return sum(line.split()[0] == event for line in records(path))


def get(port: int, target: str = "/hello?x=1") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers={"X-Trace": "t1"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def write_project(directory: Path, conf: str = CONF) -> None:
    (directory / "myapp.py").write_text(APP)
    (directory / "gunicorn.conf.py").write_text(conf)


def scenario(record: Path, port: int, master: int, stop: collections.abc.Callable[[], int]
             ) -> tuple[int, collections.Counter[str]]:
    """Boot (2 workers), one request, TTIN (3 workers), TERM; the hooks' record."""
    wait_for(lambda: count(record, "post_worker_init") == 2, 20, "2 workers to boot",
             details=lambda: "\n".join(records(record)))
    assert get(port) == 200
    os.kill(master, signal.SIGTTIN)
    wait_for(lambda: count(record, "post_worker_init") == 3, 20, "a third worker after TTIN")
    code = stop()
    return code, collections.Counter(records(record))


def ours(launcher: Launcher, conf: str = CONF) -> tuple[int, collections.Counter[str]]:
    run = next_run_dir(launcher)
    write_project(run, conf)
    port = free_port()
    record = run / "hooks.txt"
    server: Server = launcher.start(bind="none", workers=None, app="", wait=False,
                                    env={"PORT": str(port), "HOOK_RECORD": str(record)})
    server.port = port

    def stop() -> int:
        server.signal(signal.SIGTERM)
        return server.wait_exit(20)

    return scenario(record, port, server.pid, stop)


def theirs(gunicorn: Gunicorn, directory: Path, conf: str = CONF
           ) -> tuple[int, collections.Counter[str]]:
    directory.mkdir()
    write_project(directory, conf)
    port = free_port()
    record = directory / "hooks.txt"
    proc = gunicorn.start(cwd=directory, env={"PORT": str(port), "HOOK_RECORD": str(record)})
    return scenario(record, port, proc.pid, lambda: gunicorn.stop(proc, 20))


def expected(*, keepalive: int) -> collections.Counter[str]:
    lines = ["on_starting True", f"when_ready 2 {keepalive}", "nworkers_changed 2 None",
             "nworkers_changed 3 2", *["pre_fork [booting]"] * 3, *["post_fork True True True"] * 3,
             *["post_worker_init True True"] * 3, *["worker_exit True"] * 3,
             *["child_exit"] * 3, "on_exit",
             "pre_request GET /hello x=1 True", "post_request /hello 200 OK /hello"]
    return collections.Counter(lines)


def test_hooks_are_called_as_gunicorn_calls_them(launcher: Launcher, gunicorn: Gunicorn,
                                                 workdir: Path) -> None:
    code, mine = ours(launcher)
    ref_code, reference = theirs(gunicorn, workdir / "gunicorn")
    assert (code, ref_code) == (0, 0)
    assert reference == expected(keepalive=2)
    # The same calls with the same arguments; the config leaves keepalive at each server's
    # default (ours 5 s, gunicorn's 2 s: a deliberate difference, see docs/settings.md).
    assert mine == expected(keepalive=5)


@pytest.mark.parametrize("failing", ["pre_request", "post_request"])
def test_a_failing_request_hook(launcher: Launcher, gunicorn: Gunicorn, workdir: Path,
                                failing: str) -> None:
    """pre_request raising: a 500 (gunicorn's handle_error); post_request raising: logged, the
    response stands.  The worker survives both."""
    conf = failing_hook(failing, "hook bug")
    status = {}
    for name in ("ours", "theirs"):
        run = next_run_dir(launcher) if name == "ours" else workdir / "gunicorn"
        if name == "theirs":
            run.mkdir()
        write_project(run, conf)
        port = free_port()
        env = {"PORT": str(port), "HOOK_RECORD": str(run / "hooks.txt")}
        if name == "ours":
            server = launcher.start(bind="none", workers=None, app="", wait=False, env=env)
        else:
            gunicorn.start(cwd=run, env=env)
        record = run / "hooks.txt"
        wait_for(lambda: count(record, "post_worker_init") == 2, 20, "boot")  # noqa: B023
        status[name] = [get(port), get(port)]
    assert status["ours"] == status["theirs"] == ([500, 500] if failing == "pre_request"
                                                  else [200, 200])
    assert "RuntimeError: hook bug" in server.log()
    if failing == "post_request":
        assert "the post_request hook raised" in server.log()


@pytest.mark.parametrize(("hook", "code"), [("post_fork", 3), ("post_worker_init", 3),
                                            ("when_ready", 1), ("on_starting", 1)])
def test_fatal_hooks_stop_the_server_as_gunicorn_does(tmp_path: Path, gunicorn: Gunicorn,
                                                      hook: str, code: int) -> None:
    conf = failing_hook(hook, "database unreachable")
    results = {}
    for name in ("ours", "theirs"):
        run = tmp_path / name
        run.mkdir()
        write_project(run, conf)
        env = {"PORT": str(free_port()), "HOOK_RECORD": str(run / "hooks.txt")}
        if name == "ours":
            done = appserver_run(cwd=run, env=env)
        else:
            done = gunicorn.run("--no-control-socket", cwd=run, env=env)
        results[name] = done.returncode
        assert "database unreachable" in done.stderr, done.stderr[-2000:]
    assert results["ours"] == code
    # gunicorn 27 exits 3 (WORKER_BOOT_ERROR) -- or 1, when a second worker fails to boot
    # while it halts: reaping it raises HaltServer again, out of halt() (a race; ours is 3).
    assert results["theirs"] == code or (code == 3 and results["theirs"] == 1)
