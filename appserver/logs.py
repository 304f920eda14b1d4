"""Error log and access log, both reopenable on USR1 (for logrotate).

The access log speaks gunicorn's format atoms so existing log parsers keep working; ``json``
mode writes one object per line with the same information under readable names.
"""

from __future__ import annotations

import errno
import json
import logging
import os
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
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
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


class _Atoms(Mapping[str, str]):
    """gunicorn's access log atoms, computed only when the format asks for them."""

    def __init__(self, environ: Mapping[str, Any], status: str, headers: list[tuple[str, str]],
                 length: int, duration: float) -> None:
        self.environ = environ
        self.status = status
        self.headers = headers
        self.length = length
        self.duration = duration

    def __getitem__(self, key: str) -> str:
        env = self.environ
        if key.startswith("{") and key.endswith("}") and len(key) > 3:
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return str(env.get("HTTP_" + name.upper().replace("-", "_"), "-"))
            if kind == "o":
                lname = name.lower()
                return next((v for k, v in self.headers if k.lower() == lname), "-")
            if kind == "e":
                return str(env.get(name, "-"))
            raise KeyError(key)
        atom = _ATOMS.get(key)
        if atom is None:
            raise KeyError(key)
        return atom(self)

    def __iter__(self) -> Any:
        return iter(_ATOMS)

    def __len__(self) -> int:
        return len(_ATOMS)


def _request_line(a: _Atoms) -> str:
    env = a.environ
    return f"{env.get('REQUEST_METHOD', '-')} {env.get('RAW_URI', '-')} {env.get('SERVER_PROTOCOL', '-')}"


_ATOMS: dict[str, Callable[[_Atoms], str]] = {
    "h": lambda a: a.environ.get("REMOTE_ADDR") or "-",
    "l": lambda a: "-",
    "u": lambda a: "-",
    "t": lambda a: time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
    "r": _request_line,
    "m": lambda a: a.environ.get("REQUEST_METHOD", "-"),
    "U": lambda a: a.environ.get("PATH_INFO", "-"),
    "q": lambda a: a.environ.get("QUERY_STRING", ""),
    "H": lambda a: a.environ.get("SERVER_PROTOCOL", "-"),
    "s": lambda a: a.status.split(" ", 1)[0] if a.status else "-",
    "B": lambda a: str(a.length),
    "b": lambda a: str(a.length) if a.length else "-",
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

    def _open(self) -> IO[str]:
        if self.path == "-":
            return sys.stdout
        assert self.path is not None
        return open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def reopen(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            old, self._stream = self._stream, self._open()
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
