"""A deployment's own logging configuration, read as gunicorn 27 reads it, and syslog.

The server logs under gunicorn's logger names -- ``gunicorn.error`` for its messages,
``gunicorn.access`` for one line per request (see :mod:`appserver.logs`) -- so the logging
configurations written for gunicorn change what it emits:

* ``logconfig_dict`` (a config-file dict, a TOML table) is laid over :data:`DEFAULTS` key by
  key -- a dict that has ``loggers`` replaces all of the default loggers, one without keeps
  them -- and given to ``logging.config.dictConfig``;
* ``logconfig_json`` names a JSON file holding such a dict (the same defaults apply);
* ``logconfig`` names an ini file for ``logging.config.fileConfig``, which keeps the loggers
  that exist already and may write ``%(here)s`` for its own directory.

Only one applies: the dict, else the JSON file, else the ini file -- gunicorn's precedence.  It
applies after the server's own handlers (--error-logfile, --access-logfile, syslog) are in
place, so a configuration that names ``gunicorn.error`` or ``gunicorn.access`` replaces their
handlers and one that does not leaves them.  Any error -- a missing or malformed file, an
unknown handler class, a handler that cannot open its file -- is a :class:`LogSetupError`
naming the setting and the file or key, raised in the master before a worker forks.

Syslog (``--log-syslog``): a ``SysLogHandler`` to ``syslog_addr`` on ``gunicorn.error`` and,
unless ``disable_redirect_access_to_syslog``, on ``gunicorn.access``; every line reads
``gunicorn.<prefix>.error: [<pid>] <message>`` (``access`` for access lines), where the prefix
is ``syslog_prefix``, else the process name, else the app with ':' made '.'.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import logging.handlers
import os
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

from .binds import parse_syslog_address
from .config import SYSLOG_FACILITIES, ConfigError, ServerConfig, is_default_logger_class

ERROR_LOGGER = "gunicorn.error"
ACCESS_LOGGER = "gunicorn.access"
SERVER_LOGGER = "appserver"  # every module of the server logs under it (appserver.master ...)

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
TAG = "_appserver"  # set on the handlers configure() installs, so that it can drop them again

# What a logconfig_dict is laid over (gunicorn's defaults, key for key): the root logger and
# gunicorn.access to stdout, gunicorn.error to stderr, at INFO, in gunicorn's generic format.
DEFAULTS: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        ERROR_LOGGER: {"level": "INFO", "handlers": ["error_console"], "propagate": True,
                       "qualname": ERROR_LOGGER},
        ACCESS_LOGGER: {"level": "INFO", "handlers": ["console"], "propagate": True,
                        "qualname": ACCESS_LOGGER},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}


class LogSetupError(ConfigError):
    """A logging setting cannot be applied; the message names the setting and what is wrong."""


def configured_by_user(config: ServerConfig) -> str | None:
    """The setting whose logging configuration applies (gunicorn's precedence), or None."""
    if config.logconfig_dict:
        return "logconfig_dict"
    if config.logconfig_json:
        return "logconfig_json"
    if config.logconfig:
        return "logconfig"
    return None


def apply(config: ServerConfig) -> None:
    """Apply the deployment's logging configuration, if any (see the module's notes)."""
    which = configured_by_user(config)
    if which == "logconfig_dict":
        _dict_config(_over_defaults(config.logconfig_dict), "logconfig_dict")
    elif which == "logconfig_json":
        path = str(config.logconfig_json)
        where = f"--log-config-json {path}"
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise LogSetupError(f"{where}: cannot read: {exc.strerror}") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise LogSetupError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LogSetupError(f"{where}: holds {type(data).__name__}, not a JSON object (a "
                                f"logging.config.dictConfig dict)")
        _dict_config(_over_defaults(data), where)
    elif which == "logconfig":
        _file_config(str(config.logconfig))


def _over_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` laid over DEFAULTS, top-level key by key; copied, since dictConfig may change
    the dicts it is given and a reload applies the same settings again."""
    merged = {**DEFAULTS, **given}
    try:
        return copy.deepcopy(merged)
    except Exception:  # an object inside that cannot be copied (a handler instance): as given
        return merged


def _dict_config(data: dict[str, Any], where: str) -> None:
    try:
        logging.config.dictConfig(data)
    except Exception as exc:
        raise LogSetupError(f"{where}: {_explain(exc)}") from None


def _file_config(path: str) -> None:
    where = f"--log-config {path}"
    if not os.path.isfile(path):
        raise LogSetupError(f"{where}: no such file" if not os.path.exists(path)
                            else f"{where}: not a file")
    defaults = {"__file__": os.path.abspath(path), "here": os.path.dirname(os.path.abspath(path))}
    try:
        logging.config.fileConfig(path, defaults=defaults, disable_existing_loggers=False)
    except KeyError as exc:  # fileConfig's way of saying a section or option is missing
        raise LogSetupError(f"{where}: missing section or option {exc} (an ini file needs "
                            f"[loggers], [handlers] and [formatters], and the sections they "
                            f"name)") from None
    except Exception as exc:
        raise LogSetupError(f"{where}: {_explain(exc)}") from None


def _explain(exc: BaseException) -> str:
    """dictConfig says "Unable to configure handler 'file'" and keeps the reason as the cause."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    while cause is not None:
        text += f": {cause}" if str(cause) else f": {type(cause).__name__}"
        cause = cause.__cause__
    return text


def syslog_prefix(config: ServerConfig) -> str:
    return config.syslog_prefix or (config.proc_name or config.wsgi_app or "gunicorn").replace(":", ".")


def syslog_handler(config: ServerConfig, kind: str) -> logging.Handler:
    """A handler sending to syslog, ``kind`` "error" or "access" naming the program."""
    socktype, address = parse_syslog_address(config.syslog_addr)
    prefix = syslog_prefix(config).replace("%", "%%")
    try:
        handler = logging.handlers.SysLogHandler(
            address=address, facility=SYSLOG_FACILITIES[config.syslog_facility],
            socktype=socktype)  # type: ignore[arg-type]  # None: try datagram, then stream
    except OSError as exc:  # tcp:// refused, a host name that does not resolve
        raise LogSetupError(f"--log-syslog-to {config.syslog_addr}: cannot reach syslog: "
                            f"{exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter(f"gunicorn.{prefix}.{kind}: [%(process)d] %(message)s"))
    return handler


# --------------------------------------------------------------------------------------------
# The server's own handlers, and how its records reach gunicorn.error.


class ReopenableStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``dash`` (stderr) for '-', else to a file that ``reopen()`` opens afresh;
    ``label`` names it in messages ("error log", "access log")."""

    def __init__(self, path: str, dash: IO[str] | None = None, label: str = "error log",
                 delay: bool = False) -> None:
        self.path = path
        self.label = label
        self.dash = dash if dash is not None else sys.stderr
        super().__init__(self.dash)
        # delay: opened on the first write (the master never writes an access line, so it
        # never opens, nor on USR1 recreates, the access log file: the workers do).
        self.stream: IO[str] | None = None if delay else self._open()

    def _open(self) -> IO[str]:
        if self.path == "-":
            return self.dash
        return open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def ensure_open(self) -> IO[str]:
        if self.stream is None:
            self.stream = self._open()
        return self.stream

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            try:
                self.ensure_open()
            except OSError:
                self.handleError(record)
                return
        super().emit(record)

    def reopen(self) -> None:
        """Open the path afresh (logrotate moved the file); when that fails, say so and keep
        writing to the file already open -- a log that cannot be reopened never stops a worker."""
        if self.path == "-" or self.stream is None:
            return
        self.acquire()
        try:
            old = self.stream
            try:
                self.stream = self._open()
            except OSError as exc:
                failure = exc.strerror
            else:
                failure = None
                if old is not None:
                    old.close()
        finally:
            self.release()
        if failure is not None:
            logging.getLogger(SERVER_LOGGER).error(
                "cannot reopen the %s %s: %s; still writing to the file that was open",
                self.label, self.path, failure)

    def release_stream(self) -> None:
        if self.path != "-" and self.stream is not None:
            self.acquire()
            try:
                self.stream.close()
            finally:
                self.release()


class LoggerObject(Protocol):
    """An instance of a deployment's ``logger_class``, adapted to the server
    (:mod:`appserver.compat.glogger` builds it)."""

    def setup(self, config: ServerConfig) -> None:
        """The settings changed (HUP): configure again."""

    def handle(self, record: logging.LogRecord) -> None:
        """One of the server's log records: call the method of its level."""

    def access(self, environ: Mapping[str, Any], status: str | None,
               headers: list[tuple[str, str]], length: int, duration: float) -> None:
        """One response: the access log line, as the class writes it."""

    def reopen_files(self) -> None: ...

    def close_on_exec(self) -> None: ...


_factory: Callable[[ServerConfig], LoggerObject] | None = None
_object: LoggerObject | None = None
_object_class: Any = None
_configured = False  # configure() ran in this process (or in the master it was forked from)


def use_logger_class(factory: Callable[[ServerConfig], LoggerObject]) -> None:
    """How to build a ``logger_class`` instance (the gunicorn layer installs it); without it a
    class other than the defaults is refused."""
    global _factory
    _factory = factory


def logger_object() -> LoggerObject | None:
    """The ``logger_class`` instance in force, or None for the server's own logging."""
    return _object


def configured() -> bool:
    return _configured


class _ServerRecords(logging.Handler):
    """On the ``appserver`` logger, under which every module of the server logs: its records go
    on as ``gunicorn.error``'s (name included), so that gunicorn.error's filters, handlers and
    propagation -- a deployment's logging configuration -- decide what becomes of them, as they
    would under gunicorn; or to the ``logger_class`` instance."""

    def emit(self, record: logging.LogRecord) -> None:
        if _object is not None:
            _object.handle(record)
            return
        record.name = ERROR_LOGGER
        logging.getLogger(ERROR_LOGGER).handle(record)


def _tagged(handler: logging.Handler) -> logging.Handler:
    setattr(handler, TAG, True)
    return handler


def _drop_ours(*loggers: logging.Logger) -> None:
    dropped: list[logging.Handler] = []
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(handler, TAG, False):
                logger.removeHandler(handler)
                if handler not in dropped:
                    dropped.append(handler)
    for handler in dropped:
        if isinstance(handler, ReopenableStreamHandler):
            handler.release_stream()
        else:
            handler.close()


def configure(config: ServerConfig) -> None:
    """The process's logging from the settings: the error log on ``gunicorn.error`` (and the
    root logger, for apps that log), the access log on ``gunicorn.access``, syslog, then the
    deployment's logging configuration over them -- or a ``logger_class`` instance that does
    all of it.  Run in the master at start-up and on HUP; the workers inherit the result."""
    global _configured, _object, _object_class
    _configured = True
    root, server = logging.getLogger(), logging.getLogger(SERVER_LOGGER)
    error, access = logging.getLogger(ERROR_LOGGER), logging.getLogger(ACCESS_LOGGER)
    _drop_ours(root, server, error, access)
    server.propagate = False
    server.addHandler(_tagged(_ServerRecords()))
    if not is_default_logger_class(config.logger_class):
        if _factory is None:
            raise LogSetupError(f"logger_class {config.logger_class!r}: a logger class is "
                                f"supported by `appserver serve` only")
        if _object is not None and _object_class == config.logger_class:
            _object.setup(config)
        else:
            _object, _object_class = _factory(config), config.logger_class
        server.setLevel(logging.DEBUG)  # the class's debug() sees every message, as in gunicorn
        _enable_server_loggers(True)
        return
    _object = _object_class = None
    level = getattr(logging, config.loglevel.upper())
    handler = _tagged(ReopenableStreamHandler(config.errorlog))
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    error.addHandler(handler)
    error.setLevel(level)
    error.propagate = False
    root.addHandler(handler)
    root.setLevel(level)
    access.setLevel(logging.INFO)
    access.propagate = False
    if config.accesslog:
        access.addHandler(access_handler(config.accesslog))
    if config.syslog:
        error.addHandler(_tagged(syslog_handler(config, "error")))
        if not config.disable_redirect_access_to_syslog:
            access.addHandler(_tagged(syslog_handler(config, "access")))
    apply(config)
    if any(isinstance(h, _ServerRecords) for h in server.handlers):  # not taken over by name
        server.setLevel(error.getEffectiveLevel())
        _enable_server_loggers(not error.disabled)


def access_handler(path: str) -> logging.Handler:
    """The access log's own handler: the line as it is, to stdout for '-'."""
    handler = _tagged(ReopenableStreamHandler(path, sys.stdout, "access log", delay=True))
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _enable_server_loggers(enabled: bool) -> None:
    """A configuration with disable_existing_loggers disables the server's module loggers; their
    records follow gunicorn.error instead (which that configuration names, or disables too)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and \
                (name == SERVER_LOGGER or name.startswith(SERVER_LOGGER + ".")):
            logger.disabled = not enabled


def reopen_all() -> None:
    """USR1 (logrotate): the ``logger_class`` instance's reopen_files(); else every log file of
    the process afresh -- the server's and those of a logging configuration (any FileHandler,
    as gunicorn reopens them)."""
    if _object is not None:
        _object.reopen_files()
        return
    seen: set[int] = set()
    loggers = [logging.getLogger(), *(lg for lg in list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if id(handler) in seen:
                continue
            seen.add(id(handler))
            if isinstance(handler, ReopenableStreamHandler):
                handler.reopen()
            elif isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    old = handler.stream
                    if old:
                        handler.stream = handler._open()
                        old.close()
                except OSError as exc:  # keep writing to the file that is open
                    logging.getLogger(SERVER_LOGGER).error(
                        "cannot reopen the log file %s: %s", handler.baseFilename, exc.strerror)
                finally:
                    handler.release()


def close_on_exec() -> None:
    """gunicorn's moment for it (the master at start, each worker after the fork); Python's
    files are not inherited across exec anyway, so only a ``logger_class`` may care."""
    if _object is not None:
        _object.close_on_exec()
