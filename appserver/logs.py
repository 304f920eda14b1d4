"""Error log and access log, both reopenable on USR1 (for logrotate).

The access log speaks gunicorn's format atoms so existing log parsers keep working; ``json``
mode writes one object per line with the same information under readable names.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from .config import ServerConfig

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

log = logging.getLogger("appserver")


class ReopenableStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr for '-', else to a file that ``reopen()`` opens afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> IO[str]:
        if self.path == "-":
            return sys.stderr
        return open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def reopen(self) -> None:
        """Open the path afresh (logrotate moved the file); when that fails, say so and keep
        writing to the file already open -- a log that cannot be reopened never stops a worker."""
        self.acquire()
        try:
            old = self.stream
            try:
                self.stream = self._open()
            except OSError as exc:
                self.stream.write(f"cannot reopen the error log {self.path}: {exc.strerror}; "
                                  f"still writing to the file that was open\n")
                return
            if old is not sys.stderr:
                old.close()
        finally:
            self.release()


def setup_error_log(config: ServerConfig) -> ReopenableStreamHandler:
    """Configure the ``appserver`` logger (and the root logger, for apps that log) once."""
    handler = ReopenableStreamHandler(config.errorlog)
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, ReopenableStreamHandler):
            root.removeHandler(old)
            if old.stream is not sys.stderr:
                old.stream.close()
    root.addHandler(handler)
    level = getattr(logging, config.loglevel.upper())
    root.setLevel(level)
    log.setLevel(level)
    return handler


_captured: str | None = None  # the file stdout and stderr go to (--capture-output)


def capture_output(config: ServerConfig) -> None:
    """gunicorn's --capture-output: the master's stdout and stderr (and so the workers', and
    whatever an app prints) go to the error log file, again after each reopen (USR1, for
    logrotate).  Nothing to do when the error log is stderr."""
    global _captured
    if not config.capture_output or config.errorlog == "-":
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
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableStreamHandler):
            handler.reopen()
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


class AccessLog:
    """One line per response, in gunicorn's format or as JSON lines."""

    def __init__(self, config: ServerConfig) -> None:
        self.path = config.accesslog
        self.format = config.access_log_format
        self.json = config.access_log_json
        self.enabled = bool(self.path)
        self._lock = threading.Lock()
        self._stream: IO[str] | None = self._open() if self.enabled else None
        if self.enabled and not self.json:
            for key in unknown_atoms(self.format):
                log.warning("--access-logformat: %%(%s)s is no access log atom; it is logged "
                            "as '-' (as gunicorn does)", key)

    def _open(self) -> IO[str]:
        if self.path == "-":
            return sys.stdout
        assert self.path is not None
        return open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def reopen(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            try:
                new = self._open()
            except OSError as exc:  # keep logging to the file that is open (see above)
                log.error("cannot reopen the access log %s: %s; still writing to the file "
                          "that was open", self.path, exc.strerror)
                return
            old, self._stream = self._stream, new
            if old is not None and old is not sys.stdout:
                old.close()

    def log(self, environ: Mapping[str, Any], status: str | None, headers: list[tuple[str, str]],
            length: int, duration: float) -> None:
        if not self.enabled:
            return
        atoms = _Atoms(environ, status or "", headers, length, duration)
        if self.json:
            line = json.dumps({
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
                "pid": os.getpid(),
            })
        else:
            try:
                line = self.format % atoms
            except (KeyError, ValueError, TypeError) as exc:
                line = f"access log format error ({exc!r}): {_request_line(atoms)}"
        with self._lock:
            stream = self._stream
            if stream is not None:
                stream.write(line + "\n")
