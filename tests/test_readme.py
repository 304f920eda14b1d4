"""The README's commands, run exactly as printed.

A newcomer follows the README literally, so every shell command in its fenced blocks that starts
with ``./run``, ``./run-tests``, ``docker compose`` or ``appserver`` must be one that a test runs.
``README_COMMANDS`` says which test runs which command; a command added to the README without a
test fails ``test_every_readme_command_is_run_by_a_test``.

``./run`` is run from a fresh clone of the committed HEAD (what a user gets), adding only
``--port`` with a free port: it creates its own ``.venv``, serves the sample app through nginx,
and a Ctrl-C (SIGINT to its process group, as the terminal sends it) stops nginx and every server
process and leaves no socket or pid file.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from appserver.testing import free_port

from .server.harness import TOKEN_VAR, alive, children, token_pids

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PREFIXES = ("./run", "./run-tests", "docker compose", "appserver")
FENCE = re.compile(r"^```(\w*)\s*$")

# Each README command, and the test (file::function) that runs it exactly as printed.
README_COMMANDS = {
    "./run": "tests/test_readme.py::test_run_from_a_fresh_clone",
    "./run-tests": "tests/test_readme.py::test_ci_runs_exactly_the_test_command",
    "docker compose up": "tests/compose/conftest.py::deployment",
    "appserver serve -w 4 -b unix:/tmp/myproject.sock myproject.wsgi:application":
        "tests/test_readme.py::test_serve_on_its_own",
    "appserver serve --print-config app:application":
        "tests/test_readme.py::test_config_commands",
    "appserver serve --check-config app:application":
        "tests/test_readme.py::test_config_commands",
    "appserver settings-doc": "tests/test_readme.py::test_docs_commands",
    "appserver schema": "tests/test_readme.py::test_docs_commands",
}


def readme_commands(text: str) -> list[str]:
    """Shell lines (comments stripped) in the README's sh/bash/console blocks that start with
    one of PREFIXES."""
    commands = []
    block: str | None = None
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block not in ("sh", "bash", "shell", "console"):
            continue
        command = line.split(" #", 1)[0].strip().removeprefix("$ ")
        if command.startswith(PREFIXES):
            commands.append(command)
    return commands


def test_every_readme_command_is_run_by_a_test() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert commands, "no commands found in the README's fenced blocks"
    untested = [command for command in commands if command not in README_COMMANDS]
    assert not untested, f"README commands that no test runs (add a test and list it): {untested}"
    gone = [command for command in README_COMMANDS if command not in commands]
    assert not gone, f"listed here but no longer in the README: {gone}"
    for command, where in README_COMMANDS.items():
        path, _, name = where.partition("::")
        source = (REPO / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.M), f"{command!r}: {where} does not exist"


def test_readme_command_parser() -> None:
    text = ("```sh\n./run --port 1    # comment\n$ appserver schema\npip install .\n```\n"
            "```python\nappserver = 1\n```\n```\n./run-tests\n```\n")
    assert readme_commands(text) == ["./run --port 1", "appserver schema"]


def test_ci_runs_exactly_the_test_command() -> None:
    """`./run-tests` is what CI runs: .ci/run calls exactly it (and nothing else of substance)."""
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == "exec ./run-tests", lines


# ---- ./run from a fresh clone -------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _still_running(found: dict[int, str | None]) -> list[int]:
    """PIDs from ``found`` that still run the same process (not a reused PID)."""
    return [pid for pid, started in found.items() if alive(pid) and _start_time(pid) == started]


@pytest.mark.timeout(900)
def test_run_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "appserver"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    token = f"readme-{os.getpid()}-{port}"
    env = {**os.environ, TOKEN_VAR: token}
    env.pop("VIRTUAL_ENV", None)
    # A shell that types `./run --port PORT`; its own process group, as a terminal's job.
    proc = subprocess.Popen(["./run", "--port", str(port)], cwd=clone, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    try:
        assert proc.stdout is not None
        url_line = ""
        deadline = time.monotonic() + 600  # a first run creates .venv and installs the package
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("appserver up: http://"):
                url_line = line
                break
        assert url_line.startswith(f"appserver up: http://127.0.0.1:{port}/"), "".join(output)
        url = url_line.split()[2]
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and page.headers["Server"] == "nginx"
        assert "/chat" in page.text
        chat = requests.get(url + "chat", timeout=10)
        assert chat.status_code == 200 and chat.headers["Server"] == "nginx"
        assert "WebSocket" in chat.text or "ws/chat" in chat.text
        static = requests.get(url + "static/hello.txt", timeout=10)
        assert static.status_code == 200 and static.headers["Server"] == "nginx"
        assert static.content == (clone / "sample_app" / "static" / "hello.txt").read_bytes()

        nginx_pid, server_pid = (int(n) for n in re.findall(r"pid (\d+)", url_line))
        family = {pid: _start_time(pid) for pid in
                  {*token_pids(token), nginx_pid, *children(nginx_pid), server_pid,
                   *children(server_pid)}}
        assert len(family) >= 4, family  # nginx's master and worker, the server's and a worker
        run_dir = clone / ".appserver"
        assert (run_dir / "app.sock").exists() and (run_dir / "nginx.pid").exists()

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=90)
        output.append(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in token_pids(token):
            os.kill(pid, signal.SIGKILL)
    text = "".join(output)
    assert proc.returncode == 0, text
    assert "SIGINT: stopping nginx, then the app server" in text
    assert _still_running(family) == [], text
    left = sorted(str(p.relative_to(clone)) for p in clone.rglob("*")
                  if p.suffix in (".sock", ".pid") and ".venv" not in p.parts)
    assert left == [], left
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


# ---- the server on its own ----------------------------------------------------------------------

APP = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from " + environ["PATH_INFO"].encode()]
'''


def _venv_env() -> dict[str, str]:
    """The environment of a shell where `pip install .` put `appserver` on the PATH."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def _readme_command(prefix: str) -> list[str]:
    matches = [c for c in readme_commands(README.read_text()) if c.startswith(prefix)]
    assert len(matches) == 1, matches
    return shlex.split(matches[0])


def test_serve_on_its_own(tmp_path: Path) -> None:
    argv = _readme_command("appserver serve -w")
    socket_path = Path(next(a for a in argv if a.startswith("unix:")).removeprefix("unix:"))
    (tmp_path / "myproject").mkdir()
    (tmp_path / "myproject" / "__init__.py").write_text("")
    (tmp_path / "myproject" / "wsgi.py").write_text(APP)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=_venv_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        from .server.harness import UnixHTTPConnection, wait_for

        def answers() -> bool:
            if not socket_path.exists():
                return False
            conn = UnixHTTPConnection(str(socket_path), timeout=5)
            try:
                conn.request("GET", "/readme")
                response = conn.getresponse()
                return response.status == 200 and response.read() == b"hello from /readme"
            except OSError:
                return False
            finally:
                conn.close()

        wait_for(answers, 30, "the server to answer on its socket",
                 details=lambda: f"exit status {proc.poll()}")
        workers = wait_for(lambda: len(children(proc.pid)) == 4 and children(proc.pid), 30,
                           "four workers")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, output
    assert not any(alive(pid) for pid in workers)
    assert not socket_path.exists()


def test_config_commands(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    printed = subprocess.run(_readme_command("appserver serve --print-config"), cwd=tmp_path,
                             env=_venv_env(), capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert 'wsgi_app = "app:application"' in printed.stdout
    checked = subprocess.run(_readme_command("appserver serve --check-config"), cwd=tmp_path,
                             env=_venv_env(), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    (tmp_path / "app.py").write_text("raise RuntimeError('broken app')\n")
    broken = subprocess.run(_readme_command("appserver serve --check-config"), cwd=tmp_path,
                            env=_venv_env(), capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "broken app" in broken.stdout + broken.stderr


def test_docs_commands() -> None:
    doc = subprocess.run(_readme_command("appserver settings-doc"), cwd=REPO, env=_venv_env(),
                         capture_output=True, text=True, timeout=60)
    assert doc.returncode == 0, doc.stderr
    assert doc.stdout == (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    schema = subprocess.run(_readme_command("appserver schema"), cwd=REPO, env=_venv_env(),
                            capture_output=True, text=True, timeout=60)
    assert schema.returncode == 0, schema.stderr
    import json

    properties = json.loads(schema.stdout)["properties"]
    assert "workers" in properties and "bind" in properties
