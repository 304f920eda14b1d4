"""Error log and access log, both reopenable on USR1 (for logrotate).

The server logs as gunicorn does, so that logging configurations written for gunicorn apply:
its messages through the ``gunicorn.error`` logger, one line per response through
``gunicorn.access`` (:mod:`appserver.logconfig` sets both up, and applies logconfig,
logconfig_dict, logconfig_json, syslog and logger_class).

The access log speaks gunicorn's format atoms so existing log parsers keep working; ``json``
mode writes one object per line with the same information under readable names.  A record of
``gunicorn.access`` carries gunicorn's ``msg`` (the format) and ``args`` (the atoms), for the
filters deployments write; when nothing but the server's own handler would see it, the line is
written to that handler's file directly, which saves the logging machinery's cost per request.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import logconfig
from .config import ServerConfig
from .logconfig import (
    ACCESS_LOGGER,
    DATE_FORMAT,
    ERROR_FORMAT,
    TAG,
    LogSetupError,
    ReopenableStreamHandler,
    close_on_exec,
)

if TYPE_CHECKING:
    from .metrics.recorder import Recorder

__all__ = ["DATE_FORMAT", "ERROR_FORMAT", "AccessLog", "LogSetupError", "ReopenableStreamHandler",
           "capture_output", "check_log_paths", "close_on_exec", "reopen_error_log",
           "setup_error_log"]

log = logging.getLogger("appserver")


def setup_error_log(config: ServerConfig, *, previous: ServerConfig | None = None) -> None:
    """Set up the process's logging from the settings (see :func:`appserver.logconfig.configure`).

    At start-up a setting that cannot be applied raises :class:`LogSetupError`.  On a reload
    (``previous``: the settings in force), it is logged and the previous logging restored, as
    gunicorn keeps its previous logging configuration."""
    if previous is None:
        logconfig.configure(config)
        close_on_exec()
        return
    try:
        logconfig.configure(config)
    except LogSetupError as exc:
        logconfig.configure(previous)
        log.error("reload: the logging settings are refused, the previous ones stay in force: "
                  "%s", exc)


_captured: str | None = None  # the file stdout and stderr go to (--capture-output)


def capture_output(config: ServerConfig) -> None:
    """gunicorn's --capture-output: the master's stdout and stderr (and so the workers', and
    whatever an app prints) go to the error log file, again after each reopen (USR1, for
    logrotate).  Nothing to do when the error log is stderr, or when a ``logger_class`` is in
    force (gunicorn's Logger does this itself, in its setup and reopen_files)."""
    global _captured
    if not config.capture_output or config.errorlog == "-" or logconfig.logger_object():
        _captured = None
        return
    _captured = config.errorlog
    _redirect_stdio(_captured)


def _redirect_stdio(path: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def check_log_paths(config: ServerConfig) -> None:
    """Fail at start-up, not in a worker, when a log file cannot be written (and then leave no
    empty log file that this check created)."""
    created: list[str] = []
    try:
        for label, path in (("--error-logfile", config.errorlog),
                            ("--access-logfile", config.accesslog)):
            if path and path != "-":
                existed = os.path.lexists(path)
                try:
                    with open(path, "a"):
                        pass
                except OSError as exc:
                    raise OSError(f"{label} {path}: cannot open for writing: {exc.strerror}; "
                                  f"{_log_path_fix(exc, path)}") from None
                if not existed:
                    created.append(path)
    except OSError:
        for path in created:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise


def _log_path_fix(exc: OSError, path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    if exc.errno == errno.ENOENT:
        return f"create the directory {directory}, or choose another path"
    if exc.errno == errno.EISDIR:
        return "that is a directory: name a file in it"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"let the server's user write to {directory}, or choose another path"
    return "choose another path"


def reopen_error_log() -> None:
    """USR1: reopen every log file (see :func:`appserver.logconfig.reopen_all`), and point
    stdout and stderr at the error log again for --capture-output."""
    logconfig.reopen_all()
    if _captured is not None:
        try:
            _redirect_stdio(_captured)
        except OSError as exc:
            log.error("cannot reopen %s for --capture-output: %s", _captured, exc.strerror)


class _Atoms(Mapping[str, str]):
    """gunicorn's access log atoms, computed only when the format asks for them, rendered as
    gunicorn 27 renders them (tests/test_access_log.py runs gunicorn's own logger beside this):
    ``{name}i``/``{name}o``/``{name}e`` match names in any case, an atom that names nothing is
    "-", and a double quote in a value is escaped, so a client cannot end a quoted field."""

    def __init__(self, environ: Mapping[str, Any], status: str, headers: list[tuple[str, str]],
                 length: int, duration: float) -> None:
        self.environ = environ
        self.status = status
        self.headers = headers
        self.length = length
        self.duration = duration

    def __getitem__(self, key: str) -> str:
        return self._value(key).replace('"', '\\"')

    def _value(self, key: str) -> str:
        atom = _ATOMS.get(key)
        if atom is not None:
            return atom(self)
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":  # {name}i, {name}o, {name}e
            name, kind = key[1:-2].lower(), key[-1]
            if kind == "i":
                return str(self.environ.get("HTTP_" + name.upper().replace("-", "_"), "-"))
            if kind == "o":  # the last of repeated headers, as gunicorn's dict keeps it
                return next((v for k, v in reversed(self.headers) if k.lower() == name), "-")
            if kind == "e":
                return next((str(v) for k, v in self.environ.items() if k.lower() == name), "-")
        return "-"

    def __iter__(self) -> Any:
        return iter(_ATOMS)

    def __len__(self) -> int:
        return len(_ATOMS)


def unknown_atoms(log_format: str) -> list[str]:
    """The %(name)s keys of ``log_format`` that are no atom: each renders as "-"."""
    keys = re.findall(r"%\(([^)]*)\)", log_format)
    return [key for key in keys if key not in _ATOMS
            and not (key.startswith("{") and len(key) > 3 and key[-2:] in ("}i", "}o", "}e"))]


def _request_line(a: _Atoms) -> str:
    env = a.environ
    return f"{env.get('REQUEST_METHOD', '-')} {env.get('RAW_URI', '-')} {env.get('SERVER_PROTOCOL', '-')}"


def _basic_auth_user(a: _Atoms) -> str:
    """The user name of an ``Authorization: Basic`` header (gunicorn's %(u)s), else "-"."""
    auth = a.environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return "-"
    try:
        decoded = base64.b64decode(credentials.strip().encode("utf-8"))
        return decoded.split(b":", 1)[0].decode("utf-8")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return "-"


_ATOMS: dict[str, Callable[[_Atoms], str]] = {
    "h": lambda a: a.environ.get("REMOTE_ADDR") or "-",
    "l": lambda a: "-",
    "u": _basic_auth_user,
    "t": lambda a: time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
    "r": _request_line,
    "m": lambda a: a.environ.get("REQUEST_METHOD", "-"),
    "U": lambda a: a.environ.get("PATH_INFO", "-"),
    "q": lambda a: a.environ.get("QUERY_STRING", ""),
    "H": lambda a: a.environ.get("SERVER_PROTOCOL", "-"),
    "s": lambda a: a.status.split(" ", 1)[0] if a.status else "-",
    "B": lambda a: str(a.length),
    "b": lambda a: str(a.length),  # gunicorn 27: "0" for an empty body, as %(B)s
    "f": lambda a: a.environ.get("HTTP_REFERER", "-"),
    "a": lambda a: a.environ.get("HTTP_USER_AGENT", "-"),
    "T": lambda a: str(int(a.duration)),
    "M": lambda a: str(int(a.duration * 1000)),
    "D": lambda a: str(int(a.duration * 1_000_000)),
    "L": lambda a: f"{a.duration:.6f}",
    "p": lambda a: f"<{os.getpid()}>",
}


def access_log_wanted(config: ServerConfig) -> bool:
    """gunicorn's rule: access lines are made when an access log file is set, when a logging
    configuration (which may route gunicorn.access anywhere) is given, or when they go to
    syslog."""
    return bool(config.accesslog or logconfig.configured_by_user(config)
                or (config.syslog and not config.disable_redirect_access_to_syslog))


class AccessLog:
    """One line per response, in gunicorn's format or as JSON lines, through ``gunicorn.access``
    (or the ``logger_class`` instance's access())."""

    def __init__(self, config: ServerConfig) -> None:
        self.format = config.access_log_format
        self.json = config.access_log_json
        self._object = logconfig.logger_object()
        self.enabled = self._object is not None or access_log_wanted(config)
        # The metrics recorder (appserver.metrics.recorder), set by a worker that records: every
        # request ends here, so it counts here.
        self.metrics: Recorder | None = None
        self._logger = logging.getLogger(ACCESS_LOGGER)
        if config.accesslog and not logconfig.configured():  # used on its own (tests, tools)
            for old in [h for h in self._logger.handlers if getattr(h, TAG, False)]:
                self._logger.removeHandler(old)
                if isinstance(old, ReopenableStreamHandler):
                    old.release_stream()
            self._logger.addHandler(logconfig.access_handler(config.accesslog))
            self._logger.setLevel(logging.INFO)
            self._logger.propagate = False
        # The server's own handler, written to directly while it is the only one (see above).
        self._own = next((h for h in self._logger.handlers if getattr(h, TAG, False)
                          and isinstance(h, ReopenableStreamHandler)), None)
        if self.enabled and self._own is not None:
            self._own.ensure_open()  # in the worker, at boot: a file it cannot write stops it
        self._broken = ""
        if self.enabled and self._object is None and not self.json:
            for key in unknown_atoms(self.format):
                log.warning("--access-logformat: %%(%s)s is no access log atom; it is logged "
                            "as '-' (as gunicorn does)", key)
            try:
                self.format % _Atoms({}, "", [], 0, 0.0)
            except (KeyError, ValueError, TypeError) as exc:
                self._broken = repr(exc)
                log.error("--access-logformat %r: %r; each access line says so instead",
                          self.format, exc)

    def reopen(self) -> None:
        """USR1, in a worker: done by :func:`reopen_error_log` once the logging is configured."""
        if self._own is not None and not logconfig.configured():
            self._own.reopen()

    def _direct(self) -> ReopenableStreamHandler | None:
        """The server's handler when it is all that would see an access record."""
        own, logger = self._own, self._logger
        handlers = logger.handlers
        if own is None or len(handlers) != 1 or handlers[0] is not own or logger.filters \
                or logger.propagate or logger.disabled or not logger.isEnabledFor(logging.INFO):
            return None
        return own

    def log(self, environ: Mapping[str, Any], status: str | None, headers: list[tuple[str, str]],
            length: int, duration: float) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.done_environ(environ, status, length, duration)
        if not self.enabled:
            return
        if self._object is not None:
            try:
                self._object.access(environ, status, headers, length, duration)
            except Exception:
                log.exception("the logger_class's access() raised")
            return
        atoms = _Atoms(environ, status or "", headers, length, duration)
        direct = self._direct()
        if direct is None:
            if self.json:
                self._logger.info("%s", self._json_line(atoms, environ, length, duration))
            elif self._broken:
                self._logger.info("%s", self._broken_line(atoms))
            else:
                self._logger.info(self.format, atoms)  # gunicorn's msg and args
            return
        if self.json:
            line = self._json_line(atoms, environ, length, duration)
        elif self._broken:
            line = self._broken_line(atoms)
        else:
            line = self.format % atoms
        direct.acquire()
        try:
            stream = direct.ensure_open()
            stream.write(line + "\n")
            if direct.path == "-":
                stream.flush()
        except (OSError, ValueError):
            pass  # a full disk or a closed pipe never fails a request
        finally:
            direct.release()

    def _broken_line(self, atoms: _Atoms) -> str:
        return f"access log format error ({self._broken}): {_request_line(atoms)}"

    @staticmethod
    def _json_line(atoms: _Atoms, environ: Mapping[str, Any], length: int,
                   duration: float) -> str:
        return json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "remote_addr": atoms["h"],
            "method": atoms["m"],
            "uri": environ.get("RAW_URI", ""),
            "protocol": atoms["H"],
            "status": int(atoms["s"]) if atoms["s"].isdigit() else None,
            "bytes": length,
            "referer": environ.get("HTTP_REFERER"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "duration_ms": round(duration * 1000, 3),
            "request_id": environ.get("HTTP_X_REQUEST_ID"),  # nginx's $request_id, passed on
            "pid": os.getpid(),
        })
