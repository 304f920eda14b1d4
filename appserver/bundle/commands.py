"""The bundle's subcommands: ``render``, ``check``, ``up`` and ``diff``.

:mod:`appserver.cli` calls :func:`register` with its subparsers; each subcommand sets ``func`` to
a handler taking the parsed arguments and returning the exit status.  Jinja and the rest of the
bundle are imported inside the handlers, so ``appserver serve`` never loads them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appserver.bundle.loading import Loaded

DEFAULT_SETTINGS = "settings.toml"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``render``, ``check``, ``up`` and ``diff`` to the ``appserver`` command."""
    render = subparsers.add_parser(
        "render", help="render nginx.conf, compose.yaml, the server config and the Dockerfiles",
        description="Render templates/ with the settings file into nginx/nginx.conf, "
        "nginx/Dockerfile, Dockerfile, compose.yaml and deploy/appserver.toml, and the "
        "Kubernetes manifests into deploy/kubernetes/ (docs/kubernetes.md).")
    _settings_arg(render)
    _env_arg(render, "render environment NAME: the settings plus environments/NAME.toml, "
             "written under deploy/NAME/ (repeatable; docs/environments.md)")
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
    _env_arg(check, "check environment NAME: the settings plus environments/NAME.toml "
             "(repeatable)")
    check.set_defaults(func=check_command)

    up = subparsers.add_parser(
        "up", help="run nginx and the app server locally, without Docker",
        description="Render the configs under a run directory, start the app server and nginx "
        "as processes, print the URL; Ctrl-C or SIGTERM stops both.")
    _settings_arg(up)
    up.add_argument("--env", metavar="NAME",
                    help="run environment NAME: the settings plus environments/NAME.toml")
    up.add_argument("--run-dir", metavar="DIR", type=Path,
                    help="where configs, socket, logs and pid files go (default: .appserver/ beside "
                    "the settings file)")
    up.add_argument("--port", type=int, help="HTTP port (default: compose.published_port)")
    up.set_defaults(func=up_command)

    diff = subparsers.add_parser(
        "diff", help="show how two environments' rendered files differ",
        description="Render environments A and B (as `appserver render --env`, in memory) and "
        "print a unified diff of each file that differs, and each file only one of them has. "
        "Exit status: 0 when identical, 1 when they differ, 2 on an error (as diff(1)).")
    diff.add_argument("env_a", metavar="ENV_A", help="an environment (environments/ENV_A.toml)")
    diff.add_argument("env_b", metavar="ENV_B", help="another environment")
    _settings_arg(diff)
    diff.set_defaults(func=diff_command)


def _settings_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", metavar="FILE", type=Path, default=Path(DEFAULT_SETTINGS),
                        help=f"the bundle's settings file (default: ./{DEFAULT_SETTINGS})")
    parser.add_argument("--overlay", metavar="FILE", type=Path, action="append", default=[],
                        help="a TOML file deep-merged over the settings (repeatable, later ones "
                        "win; APPSERVER__TABLE__KEY variables win over all; "
                        "docs/environments.md)")


def _env_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--env", metavar="NAME", action="append", default=[], help=help_text)


def _load(args: argparse.Namespace, environment: str | None) -> Loaded:
    """The settings file, the environment's overlay, --overlay files and APPSERVER__ variables."""
    from appserver.bundle.layering import load_layered

    return load_layered(args.settings, args.overlay, environ=os.environ, environment=environment)


def _error(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _print_warnings(loaded: Loaded) -> None:
    from appserver.bundle.layering import blame
    from appserver.bundle.render import render_warnings

    tag = f"environment {loaded.environment}: " if loaded.environment else ""
    for line in render_warnings(loaded):
        print(tag + blame(loaded, line), file=sys.stderr)


def render_command(args: argparse.Namespace) -> int:
    # Each environment on its own: one whose settings fail does not stop the others.
    status = 0
    for environment in args.env or [None]:
        status = max(status, _render_one(args, environment))
    return status


def _render_one(args: argparse.Namespace, environment: str | None) -> int:
    from appserver.bundle.environments import check_name_is_free, environment_dir, in_environment
    from appserver.bundle.layering import blame
    from appserver.bundle.render import render_docker, stale_files, write_files
    from appserver.bundle.settings import SettingsError

    try:
        loaded = _load(args, environment)
    except SettingsError as exc:
        return _error(in_environment(environment, str(exc)))
    try:
        out = (args.out or loaded.directory).absolute()
        if environment is not None:
            out = environment_dir(out, environment)
        rendered = render_docker(loaded, out)
        if environment is not None:
            check_name_is_free(environment, rendered)
    except SettingsError as exc:
        return _error(in_environment(environment, blame(loaded, str(exc))))
    _print_warnings(loaded)
    if args.check:
        stale = stale_files(out, rendered)
        for item in stale:
            print(item.diff, end="" if item.diff.endswith("\n") else "\n")
        for item in stale:
            print(f"stale: {item.path} (run `appserver render"
                  f"{f' --env {environment}' if environment else ''}`)", file=sys.stderr)
        if not stale:
            print(f"up to date: {len(rendered)} files generated from {loaded.path.name}"
                  + (f" for environment {environment} ({out})" if environment else ""))
        return 1 if stale else 0
    written = write_files(out, rendered)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} of {len(rendered)} files changed"
          + (f" for environment {environment} ({out})" if environment else ""))
    return 0


def check_command(args: argparse.Namespace) -> int:
    status = 0
    for environment in args.env or [None]:
        status = max(status, _check_one(args, environment))
    return status


def _check_one(args: argparse.Namespace, environment: str | None) -> int:
    from appserver.bundle import tools
    from appserver.bundle.crosscheck import check_files
    from appserver.bundle.environments import in_environment
    from appserver.bundle.layering import blame
    from appserver.bundle.plan import ALERT_RULES, PROMETHEUS_CONFIG
    from appserver.bundle.render import render_docker
    from appserver.bundle.settings import SettingsError

    try:
        loaded = _load(args, environment)
    except SettingsError as exc:
        return _error(in_environment(environment, str(exc)))
    try:
        rendered = render_docker(loaded)  # includes the cross-checks
    except SettingsError as exc:
        return _error(in_environment(environment, blame(loaded, str(exc))))
    if environment is not None:
        print(f"environment {environment}: " + " + ".join([loaded.path.name, *loaded.layers]))
    print(f"ok: {loaded.path} is valid and its layers agree")
    _print_warnings(loaded)
    tag = f"environment {environment}: " if environment else ""  # which one failed
    failures = 0
    for problem in check_files(loaded):
        print(tag + blame(loaded, problem), file=sys.stderr)
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
            print(f"{tag}nginx -t failed:\n{result.output}", file=sys.stderr)
        result = tools.nginx_test_kubernetes(loaded, nginx)
        if result.ok:
            print("ok: nginx -t on the pod's nginx.conf (deploy/kubernetes)")
        else:
            failures += 1
            print(f"{tag}nginx -t failed on the pod's nginx.conf (deploy/kubernetes):\n"
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
            print(f"{tag}promtool check config failed:\n{result.output}", file=sys.stderr)
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
            print(f"{tag}docker compose config failed:\n{result.output}", file=sys.stderr)
    return 1 if failures else 0


def up_command(args: argparse.Namespace) -> int:
    from appserver.bundle.crosscheck import check_files
    from appserver.bundle.layering import blame
    from appserver.bundle.localstack import LocalStack, RunDirError, StackError, run_until_signalled
    from appserver.bundle.settings import SettingsError

    try:
        loaded = _load(args, args.env)
        problems = check_files(loaded)
        if problems:
            return _error(blame(loaded, "\n".join(problems)))
        stack = LocalStack(loaded, args.run_dir or loaded.run_dir, port=args.port,
                           capture_logs=False)
        stack.prepare()
        _print_warnings(loaded)
        return run_until_signalled(stack)
    except RunDirError as exc:
        return _error(f"appserver up: {exc}; choose another with --run-dir DIR")
    except (SettingsError, StackError) as exc:
        return _error(str(exc))


def diff_command(args: argparse.Namespace) -> int:
    from appserver.bundle.environments import (
        diff_renders,
        for_comparison,
        in_environment,
    )
    from appserver.bundle.render import render_docker
    from appserver.bundle.settings import SettingsError

    sides = []
    for environment in (args.env_a, args.env_b):
        try:
            # Both sides for one directory, deploy/ENV/: its depth is the real one, so relative
            # paths are as `render --env` writes them, and the names do not differ.
            sides.append(render_docker(*for_comparison(_load(args, environment))))
        except SettingsError as exc:
            print(in_environment(environment, str(exc)), file=sys.stderr)
            return 2
    differences = diff_renders(args.env_a, sides[0], args.env_b, sides[1])
    for text in differences:
        sys.stdout.write(text)
    return 1 if differences else 0
