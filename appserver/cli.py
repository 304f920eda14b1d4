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
from typing import TYPE_CHECKING, Any, get_origin

from pydantic.fields import FieldInfo

from ._build import BUILD, BUILD_REASON
from .config import OCTAL_SETTINGS, ConfigError, ServerConfig, config_as_toml, gunicorn_name

if TYPE_CHECKING:
    from .compat.sources import ParsedArgs

EXIT_USAGE = 2


# List settings given once as a comma-separated value (as gunicorn's flags take them), not
# repeated.
COMMA_SEPARATED = ("forwarded_allow_ips", "proxy_allow_ips", "forwarder_headers")


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _flags(field: FieldInfo) -> list[str]:
    return list(_extra(field).get("cli", []))


def _is_list(field: FieldInfo) -> bool:
    return get_origin(field.annotation) is list or field.annotation is list


def add_server_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """One option per setting; returns setting name -> the flag that sets it (for messages)."""
    names: dict[str, str] = {}
    group = parser.add_argument_group("server settings (also in a -c config file, or "
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
        elif _is_list(field) and name not in COMMA_SEPARATED:
            group.add_argument(*flags, dest=name, action="append", default=argparse.SUPPRESS,
                               metavar=name.upper(), help=help_text)
        elif (const := _extra(field).get("cli_const")) is not None:
            group.add_argument(*flags, dest=name, nargs="?", const=const,
                               default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)
        else:
            group.add_argument(*flags, dest=name, default=argparse.SUPPRESS,
                               metavar=name.upper(), help=help_text)
    return names


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="appserver", description="A pre-fork WSGI HTTP server and its nginx deployment bundle.")
    parser.add_argument("--version", action="version",
                        version=f"appserver 0.1.0 ({BUILD}: {BUILD_REASON})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser("serve", help="run the WSGI server",
                           description="Run the WSGI server (gunicorn-compatible options).")
    flags = add_serve_arguments(serve)
    serve.set_defaults(func=None)
    schema = sub.add_parser("schema", help="print the JSON schema of the server settings")
    schema.set_defaults(func=lambda args: _print_schema())
    docs = sub.add_parser("settings-doc", help="print the settings reference as Markdown")
    docs.add_argument("--gunicorn", action="store_true",
                      help="print the table of every gunicorn 27 setting and hook instead (for "
                      "docs/migrating-from-gunicorn.md)")
    docs.set_defaults(func=lambda args: _print_settings_doc(gunicorn=args.gunicorn))
    from .metrics import command as metrics_command  # noqa: PLC0415 - status, control

    metrics_command.register(sub)
    try:
        from .bundle import commands as bundle_commands
    except ImportError:
        bundle_commands = None  # type: ignore[assignment]
    if bundle_commands is not None:
        bundle_commands.register(sub)
    return parser, flags


def add_serve_arguments(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``serve``'s arguments: on the command line and in ``*_CMD_ARGS`` variables alike."""
    from .compat import unsupported

    parser.add_argument("app", nargs="?", metavar="MODULE:CALLABLE",
                        help="the WSGI app, e.g. myproject.wsgi:application or app:create_app()")
    parser.add_argument("-c", "--config", "--settings", dest="config", metavar="FILE",
                        help="config file: gunicorn's Python format (PATH, file:PATH or "
                        "python:MODULE), or TOML with a [server] table when it ends in .toml. "
                        "Default: ./gunicorn.conf.py when it exists")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the settings, import the app, then exit")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings as TOML, each with its source, then exit")
    flags = add_server_options(parser)
    unsupported.add_options(parser)
    return flags


class _EnvironmentParser(argparse.ArgumentParser):
    """Parses ``GUNICORN_CMD_ARGS``/``APPSERVER_CMD_ARGS``: errors are settings errors that
    name the variable, not a usage message and an exit."""

    def error(self, message: str) -> Any:  # argparse's signature is NoReturn
        raise ConfigError(f"{self.prog}: {message}")


def parsed_args(args: argparse.Namespace, flags: dict[str, str]) -> ParsedArgs:
    from .compat import unsupported
    from .compat.sources import ParsedArgs

    values = {name: getattr(args, name) for name in flags if hasattr(args, name)}
    return ParsedArgs(values, flags, config=args.config, app=args.app,
                      unsupported=unsupported.given_options(args),
                      print_config=args.print_config, check_config=args.check_config)


def parse_environment_argv(argv: list[str], source: str) -> ParsedArgs:
    parser = _EnvironmentParser(prog=source, add_help=False)
    flags = add_serve_arguments(parser)
    return parsed_args(parser.parse_args(argv), flags)


def main(argv: list[str] | None = None) -> int:
    parser, flags = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        return int(args.func(args) or 0)
    return serve(args, flags)


def serve(args: argparse.Namespace, flags: dict[str, str]) -> int:
    from .compat.sources import Sources
    from .loader import AppLoadError, app_name, check_paste, load_wsgi_app, prepare_import_path
    from .sockets import BindError

    sources = Sources(parsed_args(args, flags), parse_environment_argv)
    try:
        loaded = sources.load()
    except ConfigError as exc:
        print(f"appserver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for warning in loaded.warnings:
        print(f"appserver: warning: {warning}", file=sys.stderr)
    config = loaded.config
    if loaded.print_config:
        sys.stdout.write(config_as_toml(config, loaded.resolved.origins))
        return 0
    if not config.wsgi_app and not config.paste:
        print("appserver: error: no app given: pass MODULE:CALLABLE, or set wsgi_app in the "
              "config file (-c)", file=sys.stderr)
        return EXIT_USAGE
    if config.wsgi_app and config.paste:
        print(f"appserver: warning: --paste {config.paste} names the app; {config.wsgi_app} is "
              f"not used (as in gunicorn)", file=sys.stderr)
    os.environ.update(config.env_pairs)
    # In the master, as gunicorn does: the hooks (on_starting, post_fork...) import from the
    # project too, and the workers inherit the path.
    try:
        prepare_import_path(config)
    except OSError as exc:
        print(f"appserver: error: --chdir {config.chdir}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_paste(config)
    except AppLoadError as exc:
        print(f"appserver: error: {exc}", file=sys.stderr)
        return 4
    if config.daemon and not loaded.check_config:
        from .daemon import daemonize, detached_already
        if not detached_already():
            daemonize(config.enable_stdio_inheritance)
    app = None
    if loaded.check_config or (config.preload_app and not config.reload):
        try:
            from .workers import WorkerClassError, load_worker_class
            load_worker_class(config.effective_worker_class)
            app = load_wsgi_app(config)
        except (AppLoadError, WorkerClassError) as exc:
            print(f"appserver: error: {exc}", file=sys.stderr)
            return 4
        except Exception:
            import traceback
            traceback.print_exc()
            print(f"appserver: error: importing {app_name(config)} failed (traceback above)",
                  file=sys.stderr)
            return 4
        if loaded.check_config:
            from . import tls
            from .compat.hooks import GunicornHooks
            try:
                tls.check(config, GunicornHooks())
            except tls.TLSError as exc:
                print(f"appserver: error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(f"appserver: settings and app {app_name(config)} are OK")
            return 0
    from .arbiter import run_master
    from .compat.hooks import GunicornHooks
    from .hooks import HookFailed
    from .tls import TLSError
    from .workers import WorkerClassError
    try:
        return run_master(config, reload_config=sources.reload, hooks=GunicornHooks(), app=app)
    except (BindError, WorkerClassError, TLSError, ConfigError, OSError) as exc:
        print(f"appserver: cannot start: {exc}", file=sys.stderr)
        return 1
    except HookFailed as exc:
        print(f"appserver: cannot start: the {exc} hook raised (its traceback is in the error "
              f"log)", file=sys.stderr)
        return 1


def _print_schema() -> int:
    print(json.dumps(ServerConfig.model_json_schema(), indent=2))
    return 0


def settings_doc() -> str:
    lines = ["# Server settings", "",
             "Generated by `appserver settings-doc` from `appserver/config.py`; do not edit.", "",
             "Each setting can be given on the command line, as `APPSERVER_<NAME>` in the "
             "environment (or in `APPSERVER_CMD_ARGS`/`GUNICORN_CMD_ARGS` as flags), in a "
             "gunicorn-style Python config file (`-c gunicorn.conf.py`, read by default when "
             "present) or in the `[server]` table of a TOML file (`-c FILE.toml`). Precedence: "
             "command line > environment > file > default. The gunicorn column gives gunicorn "
             "27's name, accepted too; hooks are callables set in a Python config file (or "
             "\"module.function\" import paths). See docs/migrating-from-gunicorn.md.", "",
             "| setting | gunicorn | command line | default | meaning |",
             "|---|---|---|---|---|"]
    defaults = {"workers": "2 x cores + 1", "worker_tmp_dir": "/dev/shm if present"}
    for name, field in ServerConfig.model_fields.items():
        flags = ", ".join(f"`{f}`" for f in _flags(field)) or (
            "(positional)" if name == "wsgi_app" else "(config file)")
        theirs = gunicorn_name(name)
        gunicorn = "same" if theirs == name else f"`{theirs}`" if theirs else "—"
        default = defaults.get(name, repr(field.default) if field.default is not None else "unset")
        if name in OCTAL_SETTINGS:
            default = f"{field.default:04o}"
        desc = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {gunicorn} | {flags} | `{default}` | {desc} |")
    return "\n".join(lines) + "\n"


def _print_settings_doc(*, gunicorn: bool = False) -> int:
    if gunicorn:
        from .compat.reference import gunicorn_table
        sys.stdout.write(gunicorn_table())
    else:
        sys.stdout.write(settings_doc())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
