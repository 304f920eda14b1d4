"""Fixtures for the bundle tests: throwaway projects built from a settings file.

A project is a directory with a settings file, the app module it names, a static/ directory and
a self-signed TLS pair, so that render, ``nginx -t`` and the file checks all have what they need.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle.loading import Loaded, load_settings
from appserver.bundle.tools import find_compose, find_nginx

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"

APP_SOURCE = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def dump_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for test settings (tables, scalars, lists, inline tables)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {}
        for key, v in body.items():
            if isinstance(v, dict) and key not in ("extra", "annotations"):
                nested[key] = v
            else:
                lines.append(f"{key} = {value(v)}")
        lines.append("")
        for key, v in nested.items():
            table(f"{name}.{key}", v)

    for name, body in data.items():
        if isinstance(body, dict):
            table(name, body)
        else:
            lines.insert(0, f"{name} = {value(body)}")
    return "\n".join(lines) + "\n"


def read_data(name: str) -> dict[str, Any]:
    return tomllib.loads((DATA / name).read_text())


def make_project(root: Path, data: dict[str, Any]) -> Path:
    """Write ``settings.toml`` and what it points at under ``root``; return the settings path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "myapp.py").write_text(APP_SOURCE)
    (root / "static").mkdir(exist_ok=True)
    (root / "static" / "hello.txt").write_text("hello\n")
    tls = root / "tls"
    if not (tls / "fullchain.pem").exists():
        tls.mkdir(exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
            check=True, capture_output=True, timeout=60)
    path = root / "settings.toml"
    path.write_text(dump_toml(data))
    return path


Edit = Callable[[dict[str, Any]], None]


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Loaded]:
    """``project("maximal.toml", edit)`` -> the loaded settings of a fresh project."""

    def build(source: str | dict[str, Any] = "maximal.toml", edit: Edit | None = None) -> Loaded:
        data = copy.deepcopy(read_data(source) if isinstance(source, str) else source)
        if edit is not None:
            edit(data)
        return load_settings(make_project(tmp_path / "project", data))

    return build


@pytest.fixture(scope="session")
def nginx() -> str:
    found = find_nginx()
    if found is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


@pytest.fixture(scope="session")
def compose() -> list[str]:
    found = find_compose()
    if found is None:
        pytest.skip("Docker Compose v2 is not installed")
    return found
