"""The ``appserver`` console script: parsing and dispatch only.

``serve``'s options are generated from :class:`appserver.config.ServerConfig`, so they carry
gunicorn's names and the help text of the one declaration.  The bundle's subcommands (render,
check, up) register themselves from :mod:`appserver.bundle.commands` when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, get_origin

from pydantic.fields import FieldInfo

from .config import ConfigError, ServerConfig, config_as_toml, load_config

EXIT_USAGE = 2


def _flags(field: FieldInfo) -> list[str]:
    extra = field.json_schema_extra
    return list(extra.get("cli", [])) if isinstance(extra, dict) else []  # type: ignore[arg-type]


def _is_list(field: FieldInfo) -> bool:
    return get_origin(field.annotation) is list or field.annotation is list


def add_server_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """One option per setting; returns setting name -> the flag that sets it (for messages)."""
    names: dict[str, str] = {}
    group = parser.add_argument_group("server settings (also [server] in --settings, or "
                                      "APPSERVER_<NAME> in the environment)")
    for name, field in ServerConfig.model_fields.items():
        flags = _flags(field)
        if not flags:
            continue
        names[name] = next((f for f in flags if f.startswith("--")), flags[0])
        help_text = (field.description or "").replace("%", "%%")
        if field.annotation is bool:
            group.add_argument(*flags, dest=name, action="store_const", const=True,
                               default=argparse.SUPPRESS, help=help_text)
        elif _is_list(field) and name != "forwarded_allow_ips":
            group.add_argument(*flags, dest=name, action="append", default=argparse.SUPPRESS,
                               metavar=name.upper(), help=help_text)
        else:
            group.add_argument(*flags, dest=name, default=argparse.SUPPRESS,
                               metavar=name.upper(), help=help_text)
    return names


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="appserver", description="A pre-fork WSGI HTTP server and its nginx deployment bundle.")
    parser.add_argument("--version", action="version", version="appserver 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="run the WSGI server",
                           description="Run the WSGI server (gunicorn-compatible options).")
    serve.add_argument("app", nargs="?", metavar="MODULE:CALLABLE",
                       help="the WSGI app, e.g. myproject.wsgi:application or app:create_app()")
    serve.add_argument("--settings", "-c", metavar="FILE",
                       help="TOML file whose [server] table holds settings")
    serve.add_argument("--check-config", action="store_true",
                       help="validate the settings, import the app, then exit")
    serve.add_argument("--print-config", action="store_true",
                       help="print the resolved settings as TOML, then exit")
    flags = add_server_options(serve)
    serve.set_defaults(func=None)
    schema = sub.add_parser("schema", help="print the JSON schema of the server settings")
    schema.set_defaults(func=lambda args: _print_schema())
    docs = sub.add_parser("settings-doc", help="print the settings reference as Markdown")
    docs.set_defaults(func=lambda args: _print_settings_doc())
    try:
        from .bundle import commands as bundle_commands
    except ImportError:
        bundle_commands = None  # type: ignore[assignment]
    if bundle_commands is not None:
        bundle_commands.register(sub)
    return parser, flags


def main(argv: list[str] | None = None) -> int:
    parser, flags = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        return int(args.func(args) or 0)
    return serve(args, flags)


def serve(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from .loader import AppLoadError, load_app, prepare_import_path
    from .sockets import BindError

    cli_values: dict[str, Any] = {name: getattr(args, name) for name in flags if hasattr(args, name)}
    if args.app:
        cli_values["wsgi_app"] = args.app
        flags = {**flags, "wsgi_app": "MODULE:CALLABLE"}
    try:
        config = load_config(cli_values, settings_file=args.settings, cli_flags=flags)
    except ConfigError as exc:
        print(f"appserver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.print_config:
        sys.stdout.write(config_as_toml(config))
        return 0
    if not config.wsgi_app:
        print("appserver: error: no app given: pass MODULE:CALLABLE, or set wsgi_app in the "
              "[server] table of --settings", file=sys.stderr)
        return EXIT_USAGE
    os.environ.update(config.env_pairs)
    app = None
    if args.check_config or (config.preload_app and not config.reload):
        try:
            from .workers import WorkerClassError, load_worker_class
            load_worker_class(config.effective_worker_class)
            prepare_import_path(config)
            app = load_app(config.wsgi_app)
        except (AppLoadError, WorkerClassError) as exc:
            print(f"appserver: error: {exc}", file=sys.stderr)
            return 4
        except Exception:
            import traceback
            traceback.print_exc()
            print(f"appserver: error: importing {config.wsgi_app} failed (traceback above)",
                  file=sys.stderr)
            return 4
        if args.check_config:
            print(f"appserver: settings and app {config.wsgi_app} are OK")
            return 0
    from .arbiter import run_master
    from .workers import WorkerClassError
    try:
        return run_master(config, cli_values=cli_values, settings_file=args.settings, app=app)
    except (BindError, WorkerClassError, OSError) as exc:
        print(f"appserver: cannot start: {exc}", file=sys.stderr)
        return 1


def _print_schema() -> int:
    print(json.dumps(ServerConfig.model_json_schema(), indent=2))
    return 0


def settings_doc() -> str:
    lines = ["# Server settings", "",
             "Generated by `appserver settings-doc` from `appserver/config.py`; do not edit.", "",
             "Each setting can be given on the command line, as `APPSERVER_<NAME>` in the "
             "environment, or in the `[server]` table of a TOML file (`--settings FILE`). "
             "Precedence: command line > environment > file > default.", "",
             "| setting | command line | default | meaning |", "|---|---|---|---|"]
    defaults = {"workers": "2 x cores + 1", "worker_tmp_dir": "/dev/shm if present"}
    for name, field in ServerConfig.model_fields.items():
        flags = ", ".join(f"`{f}`" for f in _flags(field)) or "(positional)"
        default = defaults.get(name, repr(field.default) if field.default is not None else "unset")
        if name in ("umask", "socket_mode"):
            default = f"{field.default:04o}"
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {flags} | `{default}` | {desc} |")
    return "\n".join(lines) + "\n"


def _print_settings_doc() -> int:
    sys.stdout.write(settings_doc())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
