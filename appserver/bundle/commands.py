"""The bundle's subcommands: ``render``, ``check`` and ``up``.

:mod:`appserver.cli` calls :func:`register` with its subparsers; each subcommand sets ``func`` to
a handler taking the parsed arguments and returning the exit status.  Jinja and the rest of the
bundle are imported inside the handlers, so ``appserver serve`` never loads them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appserver.bundle.loading import Loaded

DEFAULT_SETTINGS = "settings.toml"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``render``, ``check`` and ``up`` to the ``appserver`` command."""
    render = subparsers.add_parser(
        "render", help="render nginx.conf, compose.yaml, the server config and the Dockerfiles",
        description="Render templates/ with the settings file into nginx/nginx.conf, "
        "nginx/Dockerfile, Dockerfile, compose.yaml and deploy/appserver.toml, and the "
        "Kubernetes manifests into deploy/kubernetes/ (docs/kubernetes.md).")
    _settings_arg(render)
    render.add_argument("--out", metavar="DIR", type=Path,
                        help="write under DIR (default: the settings file's directory)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each generated file that differs from "
                        "a fresh render, with a diff")
    render.set_defaults(func=render_command)

    check = subparsers.add_parser(
        "check", help="validate the settings, the cross-checks, nginx -t, promtool, docker "
        "compose config",
        description="Validate the settings file and the checks across nginx, the app server and "
        "compose; run `nginx -t` on the rendered config where nginx is installed, `promtool "
        "check config` on prometheus.yml and alerts.yml where promtool is, and `docker compose "
        "config -q` where compose is.")
    _settings_arg(check)
    check.set_defaults(func=check_command)

    up = subparsers.add_parser(
        "up", help="run nginx and the app server locally, without Docker",
        description="Render the configs under a run directory, start the app server and nginx "
        "as processes, print the URL; Ctrl-C or SIGTERM stops both.")
    _settings_arg(up)
    up.add_argument("--run-dir", metavar="DIR", type=Path,
                    help="where configs, socket, logs and pid files go (default: .appserver/ beside "
                    "the settings file)")
    up.add_argument("--port", type=int, help="HTTP port (default: compose.published_port)")
    up.set_defaults(func=up_command)


def _settings_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", metavar="FILE", type=Path, default=Path(DEFAULT_SETTINGS),
                        help=f"the bundle's settings file (default: ./{DEFAULT_SETTINGS})")


def _error(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _print_warnings(loaded: Loaded) -> None:
    from appserver.bundle.render import render_warnings

    for line in render_warnings(loaded):
        print(line, file=sys.stderr)


def render_command(args: argparse.Namespace) -> int:
    from appserver.bundle.loading import load_settings
    from appserver.bundle.render import render_docker, stale_files, write_files
    from appserver.bundle.settings import SettingsError

    try:
        loaded = load_settings(args.settings)
        out = (args.out or loaded.directory).absolute()
        rendered = render_docker(loaded, out)
    except SettingsError as exc:
        return _error(str(exc))
    _print_warnings(loaded)
    if args.check:
        stale = stale_files(out, rendered)
        for item in stale:
            print(item.diff, end="" if item.diff.endswith("\n") else "\n")
        for item in stale:
            print(f"stale: {item.path} (run `appserver render`)", file=sys.stderr)
        if not stale:
            print(f"up to date: {len(rendered)} files generated from {loaded.path.name}")
        return 1 if stale else 0
    written = write_files(out, rendered)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} of {len(rendered)} files changed")
    return 0


def check_command(args: argparse.Namespace) -> int:
    from appserver.bundle import tools
    from appserver.bundle.crosscheck import check_files
    from appserver.bundle.loading import load_settings
    from appserver.bundle.plan import ALERT_RULES, PROMETHEUS_CONFIG
    from appserver.bundle.render import render_docker
    from appserver.bundle.settings import SettingsError

    try:
        loaded = load_settings(args.settings)
        rendered = render_docker(loaded)  # includes the cross-checks
    except SettingsError as exc:
        return _error(str(exc))
    print(f"ok: {loaded.path} is valid and its layers agree")
    _print_warnings(loaded)
    failures = 0
    for problem in check_files(loaded):
        print(problem, file=sys.stderr)
        failures += 1
    nginx = tools.find_nginx()
    if nginx is None:
        print("skipped: nginx -t (nginx is not installed)")
    else:
        result = tools.nginx_test_docker(loaded, nginx)
        if result.ok:
            print(f"ok: nginx -t ({nginx})" + (f"\n{result.output}" if result.output else ""))
        else:
            failures += 1
            print(f"nginx -t failed:\n{result.output}", file=sys.stderr)
        result = tools.nginx_test_kubernetes(loaded, nginx)
        if result.ok:
            print("ok: nginx -t on the pod's nginx.conf (deploy/kubernetes)")
        else:
            failures += 1
            print(f"nginx -t failed on the pod's nginx.conf (deploy/kubernetes):\n"
                  f"{result.output}", file=sys.stderr)
    promtool = shutil.which("promtool")
    if promtool is None:
        print("skipped: promtool check config (promtool is not installed: Debian's prometheus "
              "package)")
    else:
        result = tools.promtool_check(promtool, rendered[PROMETHEUS_CONFIG], rendered[ALERT_RULES])
        if result.ok:
            print("ok: promtool check config (deploy/prometheus.yml and deploy/alerts.yml)")
        else:
            failures += 1
            print(f"promtool check config failed:\n{result.output}", file=sys.stderr)
    compose = tools.find_compose()
    if compose is None:
        print("skipped: docker compose config (Docker Compose v2 is not installed: Docker's "
              "compose plugin, or `pip install 'appserver[compose]'`)")
    else:
        with tempfile.TemporaryDirectory(prefix="appserver-compose-") as tmp:
            compose_file = Path(tmp) / "compose.yaml"
            compose_file.write_text(rendered["compose.yaml"], encoding="utf-8")
            result = tools.compose_config(compose, compose_file, loaded.directory)
        if result.ok:
            print("ok: docker compose config -q")
        else:
            failures += 1
            print(f"docker compose config failed:\n{result.output}", file=sys.stderr)
    return 1 if failures else 0


def up_command(args: argparse.Namespace) -> int:
    from appserver.bundle.crosscheck import check_files
    from appserver.bundle.loading import load_settings
    from appserver.bundle.localstack import LocalStack, RunDirError, StackError, run_until_signalled
    from appserver.bundle.settings import SettingsError

    try:
        loaded = load_settings(args.settings)
        problems = check_files(loaded)
        if problems:
            return _error("\n".join(problems))
        stack = LocalStack(loaded, args.run_dir or loaded.run_dir, port=args.port,
                           capture_logs=False)
        stack.prepare()
        _print_warnings(loaded)
        return run_until_signalled(stack)
    except RunDirError as exc:
        return _error(f"appserver up: {exc}; choose another with --run-dir DIR")
    except (SettingsError, StackError) as exc:
        return _error(str(exc))
