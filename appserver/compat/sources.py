"""Where the settings come from, in gunicorn's order of precedence.

gunicorn (``Application.load_config``) applies, lowest first: its defaults (``workers`` defaults
to ``$WEB_CONCURRENCY``), the config file, ``GUNICORN_CMD_ARGS``, the command line.  The config
file is the command line's ``-c``, else the one ``GUNICORN_CMD_ARGS`` names, else
``./gunicorn.conf.py`` when it exists.  We add our own sources at the environment's level and
keep gunicorn's order around them, lowest first:

1. defaults; ``$PORT`` makes the default bind ``0.0.0.0:$PORT`` (gunicorn's rule, which
   Heroku-style platforms rely on); ``WEB_CONCURRENCY`` here only under a Python config file
   (gunicorn's rule);
2. the config file: Python (gunicorn's), or TOML's ``[server]`` table (recognized by ``.toml``);
3. ``WEB_CONCURRENCY`` (without a Python config file, as before), ``GUNICORN_CMD_ARGS``,
   ``APPSERVER_CMD_ARGS``, then ``APPSERVER_<NAME>`` (the most specific);
4. the command line.

The whole load runs again on HUP, so an edited config file takes effect on reload, as with
gunicorn.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import (
    ConfigError,
    Layer,
    Resolved,
    ServerConfig,
    cli_layer,
    env_layer,
    file_layer,
    resolve,
    web_concurrency_layer,
)
from . import pyconfig, unsupported

CMD_ARGS_VARS = ("GUNICORN_CMD_ARGS", "APPSERVER_CMD_ARGS")  # lowest precedence first
DEFAULT_CONFIG = "gunicorn.conf.py"


@dataclass(frozen=True)
class ParsedArgs:
    """One command line (the real one, or a ``*_CMD_ARGS`` variable) as parsed by the CLI."""

    values: dict[str, Any]                      # the settings it gives
    flags: dict[str, str]                       # setting -> the flag that gave it
    config: str | None = None                   # -c/--config/--settings
    app: str | None = None                      # the positional MODULE:CALLABLE
    unsupported: dict[str, tuple[str, Any]] = field(default_factory=dict)
    print_config: bool = False                  # --print-config
    check_config: bool = False                  # --check-config


# (argv, what it came from) -> the parsed arguments; raises ConfigError on a bad argument.
ArgvParser = Callable[[list[str], str], ParsedArgs]


@dataclass(frozen=True)
class Loaded:
    resolved: Resolved
    warnings: list[str]
    config_file: str | None
    # --print-config/--check-config from the command line or a *_CMD_ARGS variable (gunicorn
    # honours them in GUNICORN_CMD_ARGS too).
    print_config: bool = False
    check_config: bool = False

    @property
    def config(self) -> ServerConfig:
        return self.resolved.config


@dataclass(frozen=True)
class Sources:
    """Everything needed to load the settings, at start and again on every HUP."""

    cli: ParsedArgs
    parse: ArgvParser
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: str = field(default_factory=os.getcwd)   # captured: --chdir moves the process later

    def load(self) -> Loaded:
        env_args = [(var, self._parse_env(var)) for var in CMD_ARGS_VARS if var in self.environ]
        location = self._config_location(env_args)
        errors: list[str] = []
        warnings: list[str] = []
        for where, parsed in [*((f"environment {var}", args) for var, args in env_args),
                              ("command line", self.cli)]:
            for name, (flag, value) in parsed.unsupported.items():
                is_error, message = unsupported.describe(name, value, f"{where} {flag}")
                (errors if is_error else warnings).append(message)
        layers: list[Layer] = [port_layer(self.environ)]
        python_file = location is not None and not location.endswith(".toml")
        if location is None or not python_file:
            if location is not None:
                layers.append(file_layer(location))
            layers.append(web_concurrency_layer(self.environ))
        else:
            assert location is not None
            loaded = pyconfig.load(location)
            warnings += loaded.warnings
            errors += loaded.errors
            layers += [web_concurrency_layer(self.environ), loaded.layer]
        layers += [_args_layer(args, var, f"env {var}") for var, args in env_args]
        layers.append(env_layer(self.environ, web_concurrency=False))
        cli_values = dict(self.cli.values)
        if self.cli.app:
            cli_values["wsgi_app"] = self.cli.app
        layers.append(cli_layer(cli_values, {**self.cli.flags, "wsgi_app": "MODULE:CALLABLE"}))
        if errors:
            raise ConfigError("\n".join(errors))
        given = [self.cli, *(args for _, args in env_args)]
        return Loaded(resolve(*layers), warnings, location,
                      print_config=any(args.print_config for args in given),
                      check_config=any(args.check_config for args in given))

    def reload(self) -> ServerConfig:
        """For the master's HUP: load again, warnings to the error log."""
        loaded = self.load()
        for message in loaded.warnings:
            logging.getLogger("appserver.master").warning("%s", message)
        return loaded.config

    def _parse_env(self, var: str) -> ParsedArgs:
        try:
            argv = shlex.split(self.environ[var])
        except ValueError as exc:
            raise ConfigError(f"environment {var}: cannot split it like a command line: "
                              f"{exc}") from None
        return self.parse(argv, f"environment {var}")

    def _config_location(self, env_args: list[tuple[str, ParsedArgs]]) -> str | None:
        named = [self.cli.config, *(args.config for _, args in reversed(env_args))]
        location = next((item for item in named if item), None)
        if location is None:
            default = os.path.join(self.cwd, DEFAULT_CONFIG)
            return default if os.path.exists(default) else None
        if location.startswith("python:"):
            return location
        path = location.removeprefix("file:")
        return path if os.path.isabs(path) else os.path.join(self.cwd, path)


def port_layer(environ: Mapping[str, str]) -> Layer:
    """gunicorn's default bind is ``0.0.0.0:$PORT`` when ``PORT`` is set (a platform such as
    Heroku or Render assigns the port this way); any bind from another source wins."""
    if not environ.get("PORT"):
        return Layer({}, {})
    return Layer({"bind": [f"0.0.0.0:{environ['PORT']}"]}, {"bind": "environment PORT"},
                 origin="env PORT")


def _args_layer(args: ParsedArgs, var: str, origin: str) -> Layer:
    values = dict(args.values)
    flags = dict(args.flags)
    if args.app:
        values["wsgi_app"] = args.app
        flags["wsgi_app"] = "MODULE:CALLABLE"
    labels = {key: f"environment {var} {flags.get(key, key)}" for key in values}
    return Layer(values, labels, origin=origin)
