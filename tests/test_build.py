"""The two builds of the package (appserver/_build.py): the request hot path compiled by mypyc,
and pure Python.

./run-tests installs the compiled build (APPSERVER_COMPILE=1: a failed compile fails the
install), runs the whole suite on it, then runs the protocol tests again with APPSERVER_PURE=1.
These tests check that each pass really runs the build it names, in this process and in the
servers the suite starts, and that a compiled module older than its source is never run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import appserver
from appserver import _build

from .server.harness import Launcher

REPO = Path(__file__).resolve().parents[1]


def expected_build() -> str | None:
    """The build this pass must run: ./run-tests says so through the environment (in CI the
    compiled build must be there)."""
    if os.environ.get(_build.PURE_ENV) == "1":
        return "pure"
    if os.environ.get("CI") == "true":
        return "compiled"
    return None


def require_compiled() -> None:
    """The compiled modules are installed (whichever build this pass runs)."""
    if all(_build.compiled_file(REPO / path) for path in _build.HOT_PATH):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the compiled build must be installed in CI: {appserver.BUILD_REASON}")
    pytest.skip(f"the package is not compiled here: {appserver.BUILD_REASON}")


def test_this_pass_runs_the_build_it_names(tmp_path: Path) -> None:
    expected = expected_build() or appserver.BUILD
    assert expected == appserver.BUILD, appserver.BUILD_REASON
    launcher = Launcher(tmp_path)
    try:
        server = launcher.start("-k", "gthread", workers=1)
        assert f"{expected} build" in server.log(), server.tail()
    finally:
        launcher.close()


def module_files(env: dict[str, str], cwd: Path = REPO) -> dict[str, str]:
    names = [_build.module_name(path) for path in _build.HOT_PATH]
    code = ("import importlib, json, appserver\n"
            f"print(json.dumps({{n: importlib.import_module(n).__file__ for n in {names!r}}}))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=True)
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def test_appserver_pure_imports_every_hot_module_from_its_source() -> None:
    require_compiled()
    env = {k: v for k, v in os.environ.items() if k != _build.PURE_ENV}
    compiled = module_files(env)
    assert all(not path.endswith(".py") for path in compiled.values()), compiled
    pure = module_files({**env, _build.PURE_ENV: "1"})
    assert all(path.endswith(".py") for path in pure.values()), pure


def test_a_source_changed_since_the_compile_runs_the_pure_build(tmp_path: Path) -> None:
    """A copy of the installed package whose asgi.py was edited after the compile: every hot
    module then comes from source, with a warning that names the module and the fix.  (Its
    modification time alone says nothing: pip writes a wheel's files in its own order.)"""
    require_compiled()
    shutil.copytree(REPO / "appserver", tmp_path / "appserver",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shared = importlib.util.find_spec("appserver__mypyc")
    assert shared is not None and shared.origin is not None
    shutil.copy2(shared.origin, tmp_path)
    untouched = tmp_path / "appserver" / "wsgi.py"
    later = time.time() + 5
    os.utime(untouched, (later, later))  # newer, unchanged: still the compiled one
    env = {k: v for k, v in os.environ.items() if k not in (_build.PURE_ENV, "PYTHONPATH")}
    env["PYTHONPATH"] = str(tmp_path)
    assert all(not path.endswith(".py") for path in module_files(env, cwd=tmp_path).values())
    edited = tmp_path / "appserver" / "asgi.py"
    edited.write_text(edited.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", "import appserver; print(appserver.BUILD)"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=True)
    assert proc.stdout.strip() == "pure"
    assert "appserver.asgi changed since it was compiled" in proc.stderr
    assert "pip install -e ." in proc.stderr
    files = module_files(env, cwd=tmp_path)
    assert all(path.startswith(str(tmp_path)) and path.endswith(".py")
               for path in files.values()), files


def test_an_exception_name_has_one_type_per_function_in_compiled_modules() -> None:
    """mypyc gives a local variable one type: ``except A as exc`` and ``except B as exc`` in
    one function make the second raise TypeError in the compiled build (found by the suite:
    an app error after a bad header became a dead request)."""
    reused = []
    for path in _build.HOT_PATH:
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            types: dict[str, set[str]] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
                    types.setdefault(node.name, set()).add(ast.unparse(node.type))
            reused += [f"{path}:{function.lineno} {function.name}: {name} as {sorted(kinds)}"
                       for name, kinds in types.items()
                       if len(kinds) > 1 and not all(kind.startswith("httptools.")
                                                     for kind in kinds)]
    assert not reused, "\n".join(reused)
