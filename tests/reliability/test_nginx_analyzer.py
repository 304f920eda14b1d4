"""The rendered nginx config through the ``gixy-ng`` security analyzer: no findings.

Four settings files are rendered for both targets (docker: the committed files; local: ``appserver
up`` and the test stack): the minimal one (only ``app.module``, every default), the project's
``settings.toml`` (the committed ``nginx/nginx.conf``), and the bundle tests' ``bare.toml`` (the
"else" branch of every template switch) and ``maximal.toml`` (every branch taken).  Each config
goes through ``gixy`` with every check, and the test fails on any finding except the two waived
below, each matched narrowly (one check, one directive, one reason) and explained.

Waived findings
---------------
* ``missing_resolver`` on ``proxy_pass http://$app_upstream;`` (the WebSocket locations): a false
  positive.  gixy assumes a variable in ``proxy_pass`` is a host name for DNS, but nginx first
  looks the value up among the ``upstream`` blocks and uses the resolver only when none has that
  name (ngx_http_proxy_module, proxy_pass: "the server name is searched among the described server
  groups, and, if not found, is determined using a resolver").  ``$app_upstream`` comes from a
  ``map`` whose only values are ``app`` and ``app_websocket``, both upstream blocks of the same
  file with a unix-socket server: no name is ever resolved, and a ``resolver`` would change
  nothing.  The test checks exactly that shape before waiving the finding; any other
  ``missing_resolver`` finding still fails.
* ``hsts_header`` when ``nginx.tls.hsts_max_age = 0``: the setting's documented meaning is "send
  no Strict-Transport-Security header", so the finding is the setting working (bare.toml sets it
  to exercise the branch).  The test also asserts the converse: with TLS on and a max-age, no
  ``hsts_header`` finding.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from appserver.bundle.loading import Loaded, load_settings
from appserver.bundle.render import render_docker, render_local
from tests.bundle.conftest import make_project, read_data
from tests.reliability.report import Recorder

REPO = Path(__file__).resolve().parents[2]
GIXY_TIMEOUT = 60

try:
    GIXY_VERSION = metadata.version("gixy-ng")
except metadata.PackageNotFoundError:  # pragma: no cover - the test extra installs it
    GIXY_VERSION = ""

pytestmark = pytest.mark.skipif(not GIXY_VERSION, reason="gixy-ng is not installed "
                                                         "(pip install -e '.[test]')")


def _minimal(tmp: Path) -> Loaded:
    return load_settings(make_project(tmp, {"app": {"module": "myapp:application"}}))


def _minimal_asgi(tmp: Path) -> Loaded:
    return load_settings(make_project(tmp, {"app": {"module": "myapp:app", "interface": "asgi"}}))


def _repository(tmp: Path) -> Loaded:
    return load_settings(REPO / "settings.toml")


def _from_data(name: str) -> Callable[[Path], Loaded]:
    return lambda tmp: load_settings(make_project(tmp, read_data(name)))


SETTINGS: dict[str, Callable[[Path], Loaded]] = {
    "minimal (app.module only)": _minimal,
    "minimal ASGI (app.interface = \"asgi\")": _minimal_asgi,
    "settings.toml (committed nginx/nginx.conf)": _repository,
    "bare.toml (every option off)": _from_data("bare.toml"),
    "maximal.toml (every option on)": _from_data("maximal.toml"),
}


def gixy(conf: Path) -> list[dict[str, Any]]:
    """Every finding of every check, as gixy's JSON report."""
    done = subprocess.run([sys.executable, "-m", "gixy", "--format", "json", str(conf)],
                          capture_output=True, text=True, timeout=GIXY_TIMEOUT)
    assert done.returncode in (0, 1), f"gixy failed ({done.returncode}):\n{done.stderr}"
    try:
        findings: list[dict[str, Any]] = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"gixy printed no JSON report:\n{done.stdout}\n{done.stderr}")
    assert (done.returncode == 1) == bool(findings), (done.returncode, findings)
    return findings


# ---- the waived findings (see the module docstring) ----------------------------------------

def _block(conf: str, header: str) -> str | None:
    """The body of the first ``header { ... }`` block (no nested braces in the ones we read)."""
    match = re.search(re.escape(header) + r"\s*\{([^{}]*)\}", conf)
    return match.group(1) if match else None


def upstream_map_is_static(conf: str) -> bool:
    """``$app_upstream`` can only name the two upstream blocks, each a unix socket."""
    body = _block(conf, "map $http_upgrade $app_upstream")
    if body is None:
        return False
    values = {line.split()[-1].rstrip(";") for line in body.strip().splitlines() if line.strip()}
    if values != {"app", "app_websocket"}:
        return False
    for name in values:
        upstream = _block(conf, f"upstream {name}")
        servers = re.findall(r"^\s*server\s+(\S+)", upstream or "", re.MULTILINE)
        if not servers or not all(s.startswith("unix:") for s in servers):
            return False
    return True


def waived(finding: dict[str, Any], conf: str, loaded: Loaded) -> str | None:
    """Why ``finding`` is waived, or None when it counts."""
    plugin = finding.get("plugin")
    if plugin == "missing_resolver":
        targets = set(re.findall(r"proxy_pass\s+([^;]+);", finding.get("config", "")))
        if targets == {"http://$app_upstream"} and "variable" in finding.get("reason", "") \
                and upstream_map_is_static(conf):
            return "missing_resolver: false positive, $app_upstream only names unix-socket upstreams"
    if plugin == "hsts_header":
        tls = loaded.settings.nginx.tls
        if tls.enabled and tls.hsts_max_age == 0:
            return "hsts_header: tls.hsts_max_age = 0 turns HSTS off on purpose"
    return None


# ---- the test --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SETTINGS))
def test_gixy_finds_nothing(name: str, tmp_path: Path, reliability: Recorder) -> None:
    loaded = SETTINGS[name](tmp_path / "project")
    configs = {
        "docker": render_docker(loaded)["nginx/nginx.conf"],
        "local": render_local(loaded, tmp_path / "run")[1]["nginx.conf"],
    }
    counted: list[str] = []
    waivers: set[str] = set()
    for target, text in configs.items():
        conf = tmp_path / f"nginx-{target}.conf"
        conf.write_text(text)
        findings = gixy(conf)
        for finding in findings:
            why = waived(finding, text, loaded)
            if why is None:
                counted.append(f"{target}: [{finding.get('plugin')}] {finding.get('severity')} "
                               f"line {finding.get('line')}: {finding.get('reason')}")
            else:
                waivers.add(why)
        # The HSTS waiver is narrow: the converse holds too (TLS with a max-age: no finding).
        tls = loaded.settings.nginx.tls
        if tls.enabled and tls.hsts_max_age:
            assert not any(f.get("plugin") == "hsts_header" for f in findings)

    note = f"{len(counted)}"
    if waivers:
        note += " (waived: " + "; ".join(sorted(waivers)) + ")"
    reliability.record("analyzer", settings=name, analyzer=f"gixy-ng {GIXY_VERSION}, every check",
                       findings=note)
    assert not counted, "gixy findings in the rendered nginx config:\n" + "\n".join(counted)


def test_the_waivers_still_catch_what_they_should() -> None:
    """The false-positive waiver does not swallow a real missing resolver: a map that can yield
    a host name, or a proxy_pass to another variable, still counts."""
    conf = (REPO / "nginx" / "nginx.conf").read_text()
    loaded = load_settings(REPO / "settings.toml")
    finding = {"plugin": "missing_resolver", "reason": "'proxy_pass' uses a variable",
               "config": "location ^~ /ws/ {\n\tproxy_pass http://$app_upstream;\n}"}
    assert waived(finding, conf, loaded) is not None
    hostile = conf.replace("default app_websocket;", "default backend.example.com;")
    assert waived(finding, hostile, loaded) is None
    tcp = conf.replace("upstream app_websocket {\n        server unix:",
                       "upstream app_websocket {\n        server backend.example.com:80; #")
    assert tcp != conf and waived(finding, tcp, loaded) is None
    other = dict(finding, config="location / {\n\tproxy_pass http://$backend;\n}")
    assert waived(other, conf, loaded) is None
    assert waived({"plugin": "hsts_header"}, conf, loaded) is None  # TLS is off there
