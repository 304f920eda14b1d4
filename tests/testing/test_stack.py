"""The integration harness (appserver.testing.stack and its pytest plugin) on users' own apps.

Each test writes a small WSGI app into a temporary project, as a user's would be, and boots the
real stack for it: nginx, the unix socket and the app server, all stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from appserver.bundle.settings import SettingsError
from appserver.bundle.tools import find_nginx
from appserver.testing import free_ports
from appserver.testing.plugin import StackFactory
from appserver.testing.stack import StackError, load_stack_settings, merge, start_stack

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")

USER_APP = '''
import os
import shutil

def application(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    body = f"hello from {environ['PATH_INFO']} via {environ['REMOTE_ADDR']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker", str(os.getpid()))])
    return [body]
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "static").mkdir(parents=True)
    (root / "userapp.py").write_text(USER_APP)
    (root / "static" / "site.css").write_text("body { color: teal; }\n")
    return root


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_users_app_behind_nginx(appserver_stack: StackFactory, project: Path) -> None:
    stack = appserver_stack("userapp:application", directory=project,
                            settings={"server": {"workers": 2},
                                      "nginx": {"static_dir": "static"}})
    response = requests.get(stack.url_for("/hello"), timeout=10)
    assert response.status_code == 200
    assert response.text == "hello from /hello via 127.0.0.1"
    assert response.headers["Server"] == "nginx"
    css = requests.get(stack.url + "/static/site.css", timeout=10)
    assert css.text == "body { color: teal; }\n" and "X-Worker" not in css.headers
    assert requests.get(stack.url + "/boom", timeout=10).status_code == 500
    assert "RuntimeError: boom" in stack.log()
    pids = stack.pids
    assert set(pids) == {"server", "nginx"}
    stopped = stack.stop()
    assert stopped.graceful, stopped
    assert all(gone(pid) for pid in pids.values())
    assert not Path(stack.socket_path).exists()
    assert stack.stop() is stopped  # idempotent


def test_ready_without_a_health_endpoint_unless_one_is_named(project: Path,
                                                             tmp_path: Path) -> None:
    # userapp answers 200 everywhere; an app answering 404 at /healthz is ready too...
    (project / "notfound.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('404 Not Found', [('Content-Length', '0')])\n"
        "    return [b'']\n")
    with start_stack("notfound:app", directory=project, run_dir=tmp_path / "a") as stack:
        assert requests.get(stack.url + "/x", timeout=10).status_code == 404
    # ... unless the settings name a health path that must answer 200.
    with pytest.raises(StackError, match="not healthy within 3s.*404 Not Found"):
        start_stack("notfound:app", directory=project, run_dir=tmp_path / "b", timeout=3,
                    settings={"app": {"health_path": "/healthz"}})


def test_an_app_that_cannot_be_imported(project: Path, tmp_path: Path) -> None:
    with pytest.raises(StackError) as info:
        start_stack("missing_module:app", directory=project, run_dir=tmp_path / "run")
    message = str(info.value)
    assert "exited with status" in message and "missing_module" in message


def test_settings_errors_name_the_key(project: Path) -> None:
    with pytest.raises(SettingsError, match=r"nginx\.gzip_level = 5: unknown key; did you "
                       r"mean 'gzip_comp_level'"):
        load_stack_settings("userapp:application", directory=project,
                            settings={"nginx": {"gzip_level": 5}})
    with pytest.raises(SettingsError, match="nginx.static_dir = 'nowhere': no such directory"):
        load_stack_settings("userapp:application", directory=project,
                            settings={"nginx": {"static_dir": "nowhere"}})
    with pytest.raises(SettingsError, match="give the WSGI app"):
        load_stack_settings()


def test_settings_file_with_overrides(project: Path) -> None:
    settings = project / "settings.toml"
    settings.write_text('[app]\nmodule = "userapp:application"\n\n[server]\nworkers = 3\n'
                        'timeout = 20\n\n[nginx]\nstatic_dir = "static"\ngzip = false\n'
                        '\n[compose]\npublish_address = "0.0.0.0"\n')
    loaded = load_stack_settings(settings_file=settings, settings={"server": {"workers": 1}})
    s = loaded.settings
    assert (s.app.module, s.server.workers, s.server.timeout) == ("userapp:application", 1, 20)
    assert (s.nginx.static_dir, s.nginx.gzip) == ("static", False)
    assert s.compose.publish_address == "127.0.0.1"  # tests listen on loopback only
    assert loaded.directory == project


def test_merge_is_per_table() -> None:
    base = {"server": {"workers": 2, "timeout": 30}, "nginx": {"gzip_types": ["a", "b"]}}
    merged = merge(base, {"server": {"workers": 4}, "nginx": {"gzip_types": ["c"]}})
    assert merged == {"server": {"workers": 4, "timeout": 30}, "nginx": {"gzip_types": ["c"]}}
    assert base["server"] == {"workers": 2, "timeout": 30}


def test_the_plugin_in_a_users_project(project: Path) -> None:
    """The pytest11 entry point: a project that only installed appserver gets the fixtures,
    with its ini defaults, in function and module scope."""
    (project / "pytest.ini").write_text(textwrap.dedent("""\
        [pytest]
        appserver_app = userapp:application
        """))
    (project / "test_user.py").write_text(textwrap.dedent("""\
        import os
        import pytest
        import requests

        @pytest.fixture(scope="module")
        def shared(appserver_stack_factory):
            with appserver_stack_factory(settings={"server": {"workers": 1}}) as stack:
                yield stack
            assert stack.stopped.graceful

        def test_function_scope(appserver_stack):
            stack = appserver_stack()
            assert requests.get(stack.url + "/a", timeout=10).text.startswith("hello from /a")
            with open(os.environ["PIDS_FILE"], "a") as out:
                out.write(" ".join(map(str, stack.pids.values())) + "\\n")

        @pytest.mark.parametrize("n", [1, 2])
        def test_module_scope(shared, n):
            assert requests.get(f"{shared.url}/{n}", timeout=10).status_code == 200
        """))
    pids_file = project / "pids.txt"
    env = {**os.environ, "PIDS_FILE": str(pids_file)}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 2 and all(gone(pid) for pid in pids)


def test_a_stack_cleans_up_the_run_directory_it_made(project: Path) -> None:
    """Without run_dir a stack writes to a new temporary directory: gone after a clean stop,
    kept (and named in the exception) when the block failed; a given run_dir is never removed."""
    with start_stack("userapp:application", directory=project) as stack:
        made = stack.run_dir
        assert requests.get(stack.url + "/a", timeout=10).status_code == 200
        assert (made / "appserver.log").is_file()
    assert stack.stopped is not None and stack.stopped.graceful
    assert not made.exists()

    with pytest.raises(AssertionError) as info, \
            start_stack("userapp:application", directory=project) as stack:
        kept = stack.run_dir
        raise AssertionError("the user's check failed")
    assert kept.is_dir() and (kept / "appserver.log").is_file()
    assert f"the stack's configs and logs are kept in {kept}" in info.value.__notes__
    shutil.rmtree(kept)

    given = project.parent / "given"
    with start_stack("userapp:application", directory=project, run_dir=given):
        pass
    assert (given / "appserver.log").is_file()


def test_free_ports_are_distinct_and_free() -> None:
    # One at a time, the kernel may hand back a port it just gave; two of nginx's listen lines on
    # one port then become one server, and a test talks to the wrong one (seen in CI).
    ports = free_ports(200)
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
