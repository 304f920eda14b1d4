"""gunicorn's ``logger_class``: a deployment's class with the interface of
``gunicorn.glogging.Logger``, called where gunicorn calls it.

* Built once in the master at start-up, ``cls(cfg)``, with a view of the settings in gunicorn's
  shapes (:class:`LoggerCfg`); the workers inherit the instance through the fork, as gunicorn's
  workers inherit the arbiter's.  On HUP its ``setup(cfg)`` runs with the new settings.
* Every message of the server goes to its ``debug``/``info``/``warning``/``error``/
  ``exception``/``critical`` with the message's format and arguments.
* Every response goes to ``access(resp, req, environ, request_time)``: ``resp`` and ``req`` are
  the views the request hooks receive (:mod:`.views`), ``request_time`` a ``timedelta``.
* USR1 calls ``reopen_files()``; the master at start and each worker after the fork call
  ``close_on_exec()``.

The class is imported from its path in the master (after --chdir and --pythonpath); a class that
cannot be imported, lacks one of those methods or fails to build is a start-up error naming the
setting.  A subclass of gunicorn's StatsD logger sends the StatsD metrics itself, so the
server's own StatsD client stays off then (appserver.compat.hooks).
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

from ..binds import parse_statsd_address
from ..config import ServerConfig
from ..logconfig import LogSetupError
from ..privileges import resolve_group, resolve_user
from .views import CfgView, RequestView, ResponseView

METHODS = ("access", "error", "warning", "info", "debug", "exception", "critical",
           "reopen_files", "close_on_exec")


class LoggerCfg(CfgView):
    """``cfg`` as gunicorn's Logger reads it: ``user``/``group`` as the ids the workers run as,
    ``proc_name`` never None, ``statsd_host`` parsed into an address, ``logger_class`` the
    class."""

    def __getattr__(self, name: str) -> Any:
        config = self._config()
        if name == "user":
            return resolve_user(config.user) if config.user is not None else os.geteuid()
        if name == "group":
            return resolve_group(config.group) if config.group is not None else os.getegid()
        if name in ("proc_name", "default_proc_name"):
            return (config.proc_name if name == "proc_name" else None) or config.wsgi_app \
                or "gunicorn"
        if name == "statsd_host":
            return parse_statsd_address(config.statsd_host)[1] if config.statsd_host else None
        return super().__getattr__(name)


def load_class(value: Any) -> type:
    """The class ``logger_class`` names: an import path, gunicorn's ``egg:DIST#NAME`` entry
    point form, or the class itself."""
    where = f"logger_class {value!r}"
    if inspect.isclass(value):
        return value
    text = str(value)
    if text.startswith("egg:"):
        _, _, name = text[len("egg:"):].partition("#")
        found = [ep for ep in importlib.metadata.entry_points(group="gunicorn.loggers")
                 if ep.name == (name or "simple")]
        if not found:
            raise LogSetupError(f"{where}: no entry point {name!r} in the group gunicorn.loggers")
        loaded = found[0].load()
    else:
        module_name, _, attr = text.rpartition(".")
        if not module_name:
            raise LogSetupError(f"{where}: not an import path such as mypkg.logging.MyLogger")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise LogSetupError(f"{where}: cannot import {module_name!r}: {exc}") from None
        try:
            loaded = getattr(module, attr)
        except AttributeError:
            raise LogSetupError(f"{where}: module {module_name!r} has no attribute "
                                f"{attr!r}") from None
    if not inspect.isclass(loaded):
        raise LogSetupError(f"{where}: {loaded!r} is not a class")
    return loaded


def build(config: ServerConfig) -> GunicornLogger:
    """The ``logger_class`` instance for these settings (a LogSetupError names what is wrong)."""
    cls = load_class(config.logger_class)
    where = f"logger_class {cls.__module__}.{cls.__qualname__}"
    missing = [name for name in METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise LogSetupError(f"{where}: not a gunicorn logger class: it has no "
                            f"{', '.join(missing)} (subclass gunicorn.glogging.Logger)")
    try:
        instance = cls(LoggerCfg(lambda: config))
    except Exception as exc:
        raise LogSetupError(f"{where}: building it with the settings failed: "
                            f"{type(exc).__name__}: {exc}") from None
    return GunicornLogger(instance, config)


_METHOD_OF_LEVEL = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
                    logging.ERROR: "error", logging.CRITICAL: "critical"}


class GunicornLogger:
    """The instance, as :class:`appserver.logconfig.LoggerObject`."""

    def __init__(self, instance: Any, config: ServerConfig) -> None:
        self.instance = instance
        self.config = config
        mro = {f"{c.__module__}.{c.__qualname__}" for c in type(instance).__mro__}
        self.sends_statsd = "gunicorn.instrument.statsd.Statsd" in mro

    def setup(self, config: ServerConfig) -> None:
        self.config = config
        setup = getattr(self.instance, "setup", None)
        if callable(setup):
            try:
                setup(LoggerCfg(lambda: config))
            except Exception as exc:
                raise LogSetupError(f"logger_class: setup() with the new settings failed: "
                                    f"{type(exc).__name__}: {exc}") from None

    def handle(self, record: logging.LogRecord) -> None:
        args = record.args
        positional = args if isinstance(args, tuple) else (args,) if args else ()
        kwargs: dict[str, Any] = {}
        name = _METHOD_OF_LEVEL.get(record.levelno, "error" if record.levelno > 40 else "debug")
        if record.exc_info:
            kwargs["exc_info"] = record.exc_info
            if record.levelno == logging.ERROR:
                name = "exception"
        getattr(self.instance, name)(record.msg, *positional, **kwargs)

    def access(self, environ: Mapping[str, Any], status: str | None,
               headers: list[tuple[str, str]], length: int, duration: float) -> None:
        self.instance.access(ResponseView.of(status, headers, length),
                             RequestView.from_environ(environ), environ,
                             datetime.timedelta(seconds=duration))

    def reopen_files(self) -> None:
        self.instance.reopen_files()

    def close_on_exec(self) -> None:
        self.instance.close_on_exec()
