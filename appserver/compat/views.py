"""The objects gunicorn's hooks receive, as thin read-only views over the server's own.

Real hooks use a small part of gunicorn's arbiter, worker, request and response objects:
``server.log``, ``server.cfg.<setting>``, ``server.pid``, ``server.num_workers``; ``worker.pid``,
``worker.ppid``, ``worker.age``, ``worker.log``, ``worker.cfg``, ``worker.alive``; ``req.method``,
``req.path``, ``req.query``, ``req.uri``, ``req.headers``, ``req.version``; ``resp.status``,
``resp.status_code``, ``resp.headers``, ``resp.sent``.  That part is offered, in gunicorn's
shapes (upper-case header names, ``version`` as a tuple); anything else is an AttributeError
that names the view, rather than a look-alike that behaves differently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import ALIASES, SETTING_NAMES, ServerConfig

if TYPE_CHECKING:
    from ..arbiter import Arbiter
    from ..http.events import RequestHead
    from ..workers.base import Worker
    from ..wsgi import Response


class LogView:
    """gunicorn's logger methods over a standard logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.info(msg, *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(msg, *args, **kwargs)

    warn = warning

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.error(msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.exception(msg, *args, **kwargs)

    def critical(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._logger.critical(msg, *args, **kwargs)


class CfgView:
    """``cfg.<setting>`` in gunicorn's names and ours, read from the settings in force."""

    def __init__(self, config: Callable[[], ServerConfig]) -> None:
        self._config = config

    def __getattr__(self, name: str) -> Any:
        setting = ALIASES.get(name, name)
        if setting not in SETTING_NAMES:
            raise AttributeError(f"No configuration setting for: {name}")
        return getattr(self._config(), setting)


class ServerView:
    """The master, as ``server`` in a hook."""

    def __init__(self, arbiter: Arbiter) -> None:
        self._arbiter = arbiter
        self.log = LogView(logging.getLogger("appserver.master"))
        self.cfg = CfgView(lambda: arbiter.config)

    @property
    def pid(self) -> int:
        return self._arbiter.pid

    @property
    def num_workers(self) -> int:
        return self._arbiter.num_workers

    def __repr__(self) -> str:
        return f"<server pid={self.pid} workers={self.num_workers}>"


class WorkerView:
    """A worker, as ``worker`` in a hook: the live worker in its own process, or what the
    master knows of one (pre_fork: not forked yet, and ``pid`` is "[booting]" as in gunicorn;
    child_exit: it has exited)."""

    def __init__(self, *, pid: int | str, ppid: int, age: int, config: Callable[[], ServerConfig],
                 alive: Callable[[], bool]) -> None:
        self.pid = pid
        self.ppid = ppid
        self.age = age
        self.cfg = CfgView(config)
        self._alive = alive
        self.log = LogView(logging.getLogger("appserver.worker"))

    @classmethod
    def of(cls, worker: Worker) -> WorkerView:
        return cls(pid=worker.pid, ppid=worker.ppid, age=worker.age,
                   config=lambda: worker.config, alive=lambda: worker.alive)

    @property
    def alive(self) -> bool:
        return self._alive()

    def __repr__(self) -> str:
        return f"<worker pid={self.pid} age={self.age}>"


class RequestView:
    """A request, as ``req`` in pre_request/post_request."""

    def __init__(self, head: RequestHead) -> None:
        self.method = head.method
        self.uri = head.target.decode("latin-1")
        self.path, _, self.query = self.uri.partition("?")
        self.path, _, self.fragment = self.path.partition("#")
        self.version = tuple(int(part) for part in head.version.split("."))
        self.headers = [(name.decode("latin-1").upper(), value.decode("latin-1"))
                        for name, value in head.headers]

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> RequestView:
        """The same view rebuilt from a request's environ (where the head is not at hand: the
        access log of every worker class).  Header names come back upper case with '-', as
        gunicorn keeps them; a repeated header is one entry, as the environ joined it."""
        view = cls.__new__(cls)
        view.method = str(environ.get("REQUEST_METHOD", ""))
        view.uri = str(environ.get("RAW_URI", ""))
        view.path, _, view.query = view.uri.partition("?")
        view.path, _, view.fragment = view.path.partition("#")
        protocol = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).partition("/")[2]
        view.version = tuple(int(part) for part in protocol.split(".") if part.isdigit())
        view.headers = [(key[5:].replace("_", "-"), str(value)) for key, value in environ.items()
                        if key.startswith("HTTP_")]
        for key, name in (("CONTENT_TYPE", "CONTENT-TYPE"), ("CONTENT_LENGTH", "CONTENT-LENGTH")):
            if environ.get(key):
                view.headers.append((name, str(environ[key])))
        return view

    def __repr__(self) -> str:
        return f"<req {self.method} {self.uri}>"


class ResponseView:
    """A response, as ``resp`` in post_request."""

    def __init__(self, response: Response) -> None:
        self.status = response.status or ""
        self.status_code = response.status_code or int(self.status.split(" ", 1)[0] or 0)
        self.headers = list(response.headers)
        self.sent = response.bytes_sent

    @classmethod
    def of(cls, status: str | None, headers: list[tuple[str, str]], sent: int) -> ResponseView:
        """The same view from the parts the access log has."""
        view = cls.__new__(cls)
        view.status = status or ""
        code = view.status.split(" ", 1)[0]
        view.status_code = int(code) if code.isdigit() else 0
        view.headers = list(headers)
        view.sent = sent
        return view

    def __repr__(self) -> str:
        return f"<resp {self.status}>"
