"""The control socket on a real master: mode 0600, status (JSON and the table), and the actions
(add-worker, remove-worker, reload, stop) behaving as their signals do."""

from __future__ import annotations

import json
import os
import stat
import threading

from tests.server.harness import Launcher, wait_for

from .scrape import ENV, Metered, start, value

FAST = ["--timeout", "5", "--graceful-timeout", "3"]


def test_socket_mode_and_status(launcher: Launcher) -> None:
    metered = start(launcher, "gthread", *FAST)
    assert stat.S_ISSOCK(os.stat(metered.control).st_mode)
    assert os.stat(metered.control).st_mode & 0o777 == 0o600
    thread = threading.Thread(target=lambda: metered.server.get("/slow?t=3"), daemon=True)
    thread.start()

    def busy() -> dict[str, object] | None:
        data = metered.ask("status")
        current = [w["current"] for w in data["workers"] if w["current"]]
        return data if current else None

    data = wait_for(busy, 10, "a current request in the status")
    assert data["ok"] is True
    assert data["master"]["pid"] == metered.server.pid
    assert data["master"]["worker_class"] == "gthread"
    workers = data["workers"]
    assert sorted(w["pid"] for w in workers) == metered.server.workers()
    current = next(w["current"] for w in workers if w["current"])
    assert current["method"] == "GET" and current["path"] == "/slow?t=3"
    assert 0 <= current["seconds"] < 5
    assert all(w["rss_bytes"] > 0 and w["generation"] == 1 for w in workers)
    thread.join(10)
    result = metered.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert [w["pid"] for w in printed["workers"]] == [w["pid"] for w in workers]
    table = metered.cli("status")
    assert table.returncode == 0 and "CURRENT REQUEST" in table.stdout
    assert str(metered.server.pid) in table.stdout


def test_status_found_through_the_pid_file(launcher: Launcher) -> None:
    pidfile = launcher.workdir / "master.pid"
    metered = start(launcher, "sync", *FAST, "--pid", str(pidfile))
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    result = subprocess.run([sys.executable, "-m", "appserver", "status", "--json", "--pid",
                             str(pidfile)], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"]["pid"] == metered.server.pid


def test_actions(launcher: Launcher) -> None:
    metered = start(launcher, "sync", *FAST)
    first = metered.server.workers()
    assert metered.cli("control", "add-worker").returncode == 0
    metered.server.wait_workers(3)
    assert metered.ask("remove-worker")["signal"] == "SIGTTOU"
    metered.server.wait_workers(2)
    assert metered.ask("reload")["ok"] is True
    wait_for(lambda: not set(first) & set(metered.server.workers())
             and len(metered.server.workers()) == 2, 20, "the reload to replace the workers",
             details=metered.server.tail)
    data = metered.ask("status")
    assert data["master"]["generation"] == 2
    assert {w["generation"] for w in data["workers"]} == {2}
    samples = metered.scrape()
    assert value(samples, "appserver_worker_restarts_total", reason="reload") >= 2
    assert value(samples, "appserver_worker_restarts_total", reason="crashed") == 0
    assert metered.ask("bogus")["ok"] is False
    assert metered.ask("stop")["ok"] is True
    assert metered.server.wait_exit(15) == 0
    assert not os.path.exists(metered.control)  # removed on the way out


def test_status_without_metrics(launcher: Launcher) -> None:
    """The control socket alone (its default) records nothing per request: the status still
    shows the workers, their requests served, RSS and the restarts."""
    control = str(launcher.workdir / "plain.sock")
    server = launcher.start("-k", "sync", *FAST, "--control-socket", control,
                            "--max-requests", "3", app="metrics_apps:app", env=ENV, workers=1)
    for _ in range(4):
        server.get("/")
    metered = Metered(server, None, None, control)

    def recycled() -> dict[str, object] | None:
        data = metered.ask("status")
        return data if data["restarts_total"].get("max_requests") and data["workers"] else None

    data = wait_for(recycled, 15, "the max_requests restart in the status")
    assert [r["reason"] for r in data["recent_restarts"]] == ["max_requests"]
    assert all(w["current"] is None and w["websockets_open"] is None and w["rss_bytes"] > 0
               for w in data["workers"])
    assert metered.cli("status").returncode == 0
