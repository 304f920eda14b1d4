"""--user, --group and --initgroups: the workers run as that identity, the master keeps root;
observed from the app and from /proc, beside gunicorn 27 run with the same flags."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import signal
from pathlib import Path

import pytest

from ..server.harness import Gunicorn, Launcher, free_port, listening, wait_for
from .conftest import next_run_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

APP = '''import json, os


def application(environ, start_response):
    body = json.dumps({"uid": os.getuid(), "gid": os.getgid(),
                       "groups": sorted(os.getgroups())}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''
NOBODY = pwd.getpwnam("nobody")


def ask(port: int) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    data = json.loads(conn.getresponse().read())
    conn.close()
    assert isinstance(data, dict)
    return data


def proc_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("Uid:")).split()[1])


def project(directory: Path) -> Path:
    directory.chmod(0o755)  # the workers' user imports the app from here
    directory.parent.chmod(0o755)
    (directory / "whoami.py").write_text(APP)
    return directory


@pytest.mark.parametrize("initgroups", [False, True])
def test_workers_run_as_the_user_like_gunicorns(launcher: Launcher, gunicorn: Gunicorn,
                                                workdir: Path, initgroups: bool) -> None:
    flags = ["--user", "nobody", "--group", str(NOBODY.pw_gid)]
    if initgroups:
        flags.append("--initgroups")
    run = project(next_run_dir(launcher))
    ours = launcher.start("-k", "gthread", *flags, "--chdir", str(run), bind="tcp", workers=1,
                          app="whoami:application", errorlog=run / "errors.log")
    assert ours.port is not None
    mine = ask(ours.port)

    theirs_dir = workdir / "gunicorn"
    theirs_dir.mkdir()
    project(theirs_dir)
    port = free_port()
    proc = gunicorn.start("-w", "1", "-b", f"127.0.0.1:{port}", *flags, "whoami:application",
                          cwd=theirs_dir)
    wait_for(lambda: listening(port), 20, "gunicorn to listen",
             details=lambda: (theirs_dir / "gunicorn.stderr").read_text())
    theirs = ask(port)
    expected_groups = sorted(os.getgrouplist("nobody", NOBODY.pw_gid)) if initgroups else []
    expected = {"uid": NOBODY.pw_uid, "gid": NOBODY.pw_gid, "groups": expected_groups}
    assert mine == expected
    if initgroups:
        # A deliberate difference: with --initgroups gunicorn 27 sets the supplementary groups
        # but never the primary group, so its workers keep the master's (root, gid 0).
        assert theirs == {**expected, "gid": 0}
    else:
        assert theirs == expected
    # The master keeps root; the worker does not.
    assert proc_uid(ours.pid) == 0
    assert [proc_uid(pid) for pid in ours.workers()] == [NOBODY.pw_uid]
    gunicorn.stop(proc)



def test_the_workers_can_reopen_their_logs(launcher: Launcher) -> None:
    """USR1 (logrotate): a worker running as nobody reopens the access log the master handed
    to it.  Rotated the way logrotate's ``create`` does it, the new file for that user, it
    writes there; rotated without one (the directory is root's), it says so and keeps writing
    to the file it has, and serves on."""
    run = project(next_run_dir(launcher))
    access = run / "access.log"
    server = launcher.start("-k", "sync", "--user", "nobody", "--access-logfile", str(access),
                            "--chdir", str(run), bind="tcp", workers=1, app="whoami:application",
                            errorlog=run / "errors.log")
    assert server.port is not None
    assert access.stat().st_uid == NOBODY.pw_uid  # handed over by the master
    access.rename(run / "access.log.1")
    access.touch()
    os.chown(access, NOBODY.pw_uid, -1)  # logrotate: create 0644 nobody
    server.signal(signal.SIGUSR1)
    server.wait_log(r"worker \d+ reopened its log files")
    ask(server.port)
    wait_for(lambda: "GET / " in access.read_text(), 10, "a line in the reopened access log",
             details=server.tail)

    access.rename(run / "access.log.2")  # and no new file: nobody cannot create one here
    server.signal(signal.SIGUSR1)
    server.wait_log(r"cannot reopen the access log .*Permission denied; still writing")
    ask(server.port)
    wait_for(lambda: "GET / " in (run / "access.log.2").read_text(), 10,
             "the line in the file still open", details=server.tail)
    assert "crashed" not in server.log()


def test_an_unknown_user_is_a_clear_error(launcher: Launcher) -> None:
    server = launcher.start("--user", "no-such-user-here", bind="tcp", workers=1, wait=False)
    assert server.wait_exit(20) != 0
    assert "no user named 'no-such-user-here'" in server.log()
