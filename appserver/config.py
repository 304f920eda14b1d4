"""The app server's settings, each declared exactly once.

Every setting is a field of :class:`ServerConfig` with its type, default, bounds and help text.  The
command line (:mod:`appserver.cli`), ``--print-config``, the JSON schema and ``docs/settings.md`` are
all generated from these declarations, so a setting cannot be documented one way and parsed another.

Sources, highest precedence first: command line > environment (``APPSERVER_<NAME>``, and
``WEB_CONCURRENCY`` for the worker count) > the ``[server]`` table of a TOML file > default.
Unknown keys are errors, and every error names where the value came from, the key, the value and
what is allowed.  gunicorn's Python config files, ``GUNICORN_CMD_ARGS`` and ``APPSERVER_CMD_ARGS``
are further sources, loaded by :mod:`appserver.compat.sources` into the same :class:`Layer` s.

A field whose gunicorn name differs carries it (``gunicorn="keepalive"``): both names are
accepted everywhere.  The server hooks are settings too (callables, or "module.function" import
strings as gunicorn accepts); the core calls them through :mod:`appserver.hooks`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from .binds import BindAddress, parse_bind, parse_statsd_address
from .forwarded import parse_allow_list
from .machine import default_heartbeat_dir, default_workers
from .privileges import Identity, resolve_group, resolve_user

# Worker classes known to the server; each is imported lazily by appserver.workers.
WORKER_CLASSES = ("sync", "gthread", "gevent", "eventlet", "tornado", "asyncio")
# gunicorn's names for its worker classes (SUPPORTED_WORKERS, the dotted paths, the "egg:"
# form), as ours: a gunicorn command line or config keeps working unchanged.
GUNICORN_WORKER_CLASSES = {
    "gevent_wsgi": "gevent", "gevent_pywsgi": "gevent", "eventlet": "eventlet",
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent",
    "gunicorn.workers.geventlet.EventletWorker": "eventlet",
    "gunicorn.workers.gtornado.TornadoWorker": "tornado",
}
# Classes other servers ship for gunicorn, and what to use here instead.
FOREIGN_WORKER_CLASSES = {
    "asgi": "gunicorn's ASGI worker: ASGI apps are not served yet; a WSGI app runs on asyncio",
    "gunicorn.workers.gasgi.ASGIWorker": "gunicorn's ASGI worker: ASGI apps are not served yet",
    "uvicorn.workers.UvicornWorker": "uvicorn's worker serves ASGI apps, which are not served "
    "yet; for a WSGI app choose asyncio (uvloop) or gthread",
    "uvicorn.workers.UvicornH11Worker": "uvicorn's worker serves ASGI apps, which are not served "
    "yet; for a WSGI app choose asyncio or gthread",
    "uvicorn_worker.UvicornWorker": "uvicorn's worker serves ASGI apps, which are not served "
    "yet; for a WSGI app choose asyncio (uvloop) or gthread",
}


def worker_class_name(value: str) -> str:
    """Our name for a worker class given as ours or as gunicorn names it; ValueError naming
    what to use for anything else."""
    name = value.removeprefix("egg:gunicorn#")
    name = GUNICORN_WORKER_CLASSES.get(name, name)
    if name in WORKER_CLASSES:
        return name
    why = FOREIGN_WORKER_CLASSES.get(name)
    if why:
        raise ValueError(f"{value!r}: {why}")
    raise ValueError(f"{value!r} is not a worker class (gunicorn's names for ours are accepted "
                     f"too)")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# gunicorn's default access log format is the common format; the issue asks for the combined one.
COMBINED_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

# A limit of 0 means "no limit" in gunicorn's vocabulary; we still keep a hard ceiling so that a
# misconfiguration cannot let one client allocate unbounded memory (RFC 9112 §3 and §5 leave the
# limits to the server).
HARD_MAX_REQUEST_LINE = 65536
HARD_MAX_FIELD_SIZE = 65536
HARD_MAX_FIELDS = 32768


class ConfigError(Exception):
    """A setting is unknown or has a value that is not allowed; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Value parsers shared by the fields (strings come from the CLI and the environment).


def _split_list(value: Any) -> Any:
    """Accept a list, or a string of comma- or whitespace-separated items (env and CLI)."""
    if isinstance(value, str):
        return [item for item in re.split(r"[,\s]+", value) if item]
    return value


def _octal(value: Any) -> Any:
    """Accept 0o660, "0660", "660" or "0o660" as an octal file mode."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", text):
            raise ValueError(f"{value!r} is not an octal mode such as 0660")
        return int(text, 8)
    return value


_SIZE_UNITS = {
    "": 1 << 20,  # a bare number is MiB, like uWSGI's reload-on-rss
    "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
}


def _memory_size(value: Any) -> Any:
    """Parse "512", "512M", "512MiB" or "1G" into bytes (a bare number means MiB)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512M or 1G")
    if isinstance(value, int):
        return value * _SIZE_UNITS[""]
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size such as 512M, 512MiB or 1G")
        return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    return value


def _import_callable(value: Any) -> Any:
    """A hook given as "package.module.function" (TOML, the environment) is imported, as
    gunicorn's validate_callable does; a callable (a Python config file) is taken as it is."""
    if not isinstance(value, str):
        return value
    module_name, _, attr = value.rpartition(".")
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value):
        raise ValueError(f"{value!r} is not an import path such as mypkg.hooks.post_fork")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None


def positional_arity(func: Callable[..., Any]) -> int:
    """How many positional parameters ``func`` declares -- gunicorn's rule for a hook's arity
    (parameters with defaults count; ``*args`` does not)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in inspect.signature(func).parameters.values())


StrList = Annotated[list[str], BeforeValidator(_split_list)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error", "critical"],
                     BeforeValidator(lambda value: value.lower() if isinstance(value, str) else value)]
OctalMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o7777)]
MemorySize = Annotated[int, BeforeValidator(_memory_size), Field(ge=0)]
# A hook: a callable, or its import path.  In the JSON schema (TOML, environment) it is a string.
Hook = Annotated[Callable[..., Any] | None, BeforeValidator(_import_callable),
                 WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}]})]


def setting(default: Any = None, *, help: str, cli: tuple[str, ...] = (),
            gunicorn: str | bool = True, hook: tuple[int, ...] = (), cli_const: Any = None,
            **kwargs: Any) -> Any:
    """Declare a setting: its default, help text, CLI flags and bounds, all in one place.

    ``gunicorn``: True when gunicorn 27 has the setting under the same name, its name when it
    differs (accepted as an alias), False when it has none.  ``hook``: the arities a server
    hook may have (gunicorn's signature), which makes the setting a hook.  ``cli_const``: the
    value of the flag given without one (gunicorn's ``--proxy-protocol`` alone means auto)."""
    extra: dict[str, Any] = {"cli": list(cli), "gunicorn": gunicorn}
    if cli_const is not None:
        extra["cli_const"] = cli_const
    if hook:
        extra["hook_arity"] = list(hook)
    if callable(default):
        return Field(default_factory=default, description=help, json_schema_extra=extra, **kwargs)
    return Field(default=default, description=help, json_schema_extra=extra, **kwargs)


def hook_arities(name: str) -> tuple[int, ...]:
    """The arities the hook setting ``name`` may have; () when it is not a hook."""
    field_info = ServerConfig.model_fields.get(name)
    extra = field_info.json_schema_extra if field_info is not None else None
    arity = extra.get("hook_arity") if isinstance(extra, dict) else None
    return tuple(arity) if isinstance(arity, list) else ()  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------


class ServerConfig(BaseModel):
    """Every setting of the app server.  Field order is the order of ``--help`` and the docs."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    wsgi_app: str | None = setting(
        None, help="The WSGI app as MODULE:CALLABLE, or MODULE:factory() to call an app factory "
        "(given as the positional argument on the command line).")
    bind: StrList = setting(
        ["127.0.0.1:8000"], cli=("-b", "--bind"), min_length=1,
        help="Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeatable.")
    workers: int = setting(
        default_workers, cli=("-w", "--workers"), ge=1, le=1024,
        help="Number of worker processes. Default: 2 x usable CPU cores + 1 (CPU affinity and "
        "a container's CPU quota counted). Also read from WEB_CONCURRENCY.")
    worker_class: str = setting(
        "sync", cli=("-k", "--worker-class"),
        help="Worker class: " + ", ".join(WORKER_CLASSES) + ".")
    threads: int = setting(
        1, cli=("--threads",), ge=1, le=4096,
        help="Threads per worker: the gthread class's threads (sync with --threads > 1 means "
        "gthread), and the app pool of the asyncio and tornado classes (64 when left at 1).")
    asyncio_loop: Literal["auto", "asyncio", "uvloop"] = setting(
        "auto", gunicorn=False, cli=("--loop",),
        help="Event loop of the asyncio and tornado classes: uvloop, asyncio, or auto (uvloop "
        "when installed).")
    worker_connections: int = setting(
        1000, cli=("--worker-connections",), ge=1, le=1_000_000,
        help="Most simultaneous connections one worker holds (gthread and async classes; for sync, "
             "the connections waiting for their request heads).")
    timeout: int = setting(
        30, cli=("-t", "--timeout"), ge=0, le=86400,
        help="Seconds a worker may stay silent (no heartbeat) before the master aborts it. 0: never.")
    graceful_timeout: int = setting(
        30, cli=("--graceful-timeout",), ge=0, le=86400,
        help="Seconds in-flight requests get to finish on a graceful stop, reload or recycle.")
    keep_alive: int = setting(
        5, cli=("--keep-alive",), gunicorn="keepalive", ge=0, le=3600,
        help="Seconds an idle keep-alive connection stays open. Keep it above nginx's upstream "
        "keepalive_timeout so that nginx, not the server, closes idle connections. 0: no keep-alive.")
    header_timeout: float = setting(
        10.0, gunicorn=False, cli=("--header-timeout",), gt=0, le=3600,
        help="Seconds a client gets to send a complete request head (slowloris defence); also the "
        "longest a request body read or a response write may go without progress.")
    max_requests: int = setting(
        0, cli=("--max-requests",), ge=0,
        help="Recycle a worker after this many requests (plus jitter). 0: never.")
    max_requests_jitter: int = setting(
        0, cli=("--max-requests-jitter",), ge=0,
        help="Random 0..N added to --max-requests per worker, so workers do not recycle together.")
    max_worker_memory: MemorySize = setting(
        0, gunicorn=False, cli=("--max-worker-memory",),
        help="Recycle a worker whose resident memory exceeds this size (512M, 1G; a bare number "
        "is MiB). 0: never.")
    backlog: int = setting(
        2048, cli=("--backlog",), ge=1, le=65535,
        help="Listen backlog: connections the kernel queues while every worker is busy.")
    umask: OctalMode = setting(0, cli=("-m", "--umask"), help="umask of the server processes (octal).")
    socket_mode: OctalMode = setting(
        0o660, gunicorn=False, cli=("--socket-mode",),
        help="File mode of unix sockets (octal). nginx's worker user needs write permission.")
    socket_group: str | None = setting(
        None, gunicorn=False, cli=("--socket-group",),
        help="Group (name or id) given to unix sockets, e.g. the nginx worker user's group.")
    preload_app: bool = setting(
        False, cli=("--preload",),
        help="Load the app in the master before forking (saves memory; HUP then cannot reload code: "
        "use USR2).")
    chdir: str | None = setting(
        None, cli=("--chdir",), help="Change to this directory before loading the app.")
    pythonpath: str | None = setting(
        None, cli=("--pythonpath",),
        help="Comma-separated directories prepended to sys.path before loading the app.")
    pidfile: str | None = setting(None, cli=("-p", "--pid"), help="Write the master's PID to this file.")
    worker_tmp_dir: str | None = setting(
        default_heartbeat_dir, cli=("--worker-tmp-dir",),
        help="Directory of the workers' heartbeat files. Default: /dev/shm (a tmpfs) when present, "
        "else the system temp dir.")
    accesslog: str | None = setting(
        None, cli=("--access-logfile",), help="Access log file; '-' is stdout. Default: none.")
    access_log_format: str = setting(
        COMBINED_FORMAT, cli=("--access-logformat",),
        help="Access log format in gunicorn's atoms (%(h)s, %(r)s, %(s)s, %(D)s, %({name}i)s ...).")
    access_log_json: bool = setting(
        False, gunicorn=False, cli=("--access-log-json",),
        help="Write the access log as JSON lines (one object per request) instead of the format.")
    errorlog: str = setting("-", cli=("--error-logfile", "--log-file"), help="Error log file; '-' is stderr.")
    loglevel: LogLevel = setting(
        "info", cli=("--log-level",),
        help="Error log level: " + ", ".join(LOG_LEVELS) + " (in any case, as gunicorn takes it).")
    forwarded_allow_ips: StrList = setting(
        ["127.0.0.1", "::1"], cli=("--forwarded-allow-ips",),
        help="Peers allowed to send X-Forwarded-For/-Proto (comma-separated addresses and CIDR "
        "ranges; '*': every peer). A unix-socket peer (nginx) always is. Says who may send "
        "them, never how many of their entries are believed: see forwarded_hops.")
    forwarded_hops: int = setting(
        1, gunicorn=False, cli=("--forwarded-hops",), ge=1, le=32,
        help="Proxies in front that append to X-Forwarded-For/-Proto: the entry this many places "
        "from the right is believed (REMOTE_ADDR, wsgi.url_scheme), everything left of it is "
        "ignored; a header with fewer entries is ignored whole (Werkzeug ProxyFix's x_for).")
    proc_name: str | None = setting(
        None, cli=("-n", "--name"),
        help="Name the processes 'appserver: master [NAME]' and 'appserver: worker [NAME]' in ps "
        "and top (needs setproctitle: the proctitle extra). Default: titles unchanged.")
    user: str | None = setting(
        None, cli=("-u", "--user"),
        help="Run the workers as this user (a name or a uid); the master keeps its own. Needs "
        "a master started as root. Default: unchanged.")
    group: str | None = setting(
        None, cli=("-g", "--group"),
        help="Run the workers with this group (a name or a gid). Default: unchanged.")
    initgroups: bool = setting(
        False, cli=("--initgroups",),
        help="With --user: give the workers the user's supplementary groups as well (otherwise "
        "they have none).")
    reuse_port: bool = setting(
        False, cli=("--reuse-port",),
        help="Set SO_REUSEPORT on TCP listeners, so that other processes may bind the same port.")
    capture_output: bool = setting(
        False, cli=("--capture-output",),
        help="Send the stdout and stderr of the server and its workers (what an app prints) to "
        "the error log file (no effect when that is stderr).")
    proxy_protocol: Literal["off", "v1", "v2", "auto"] = setting(
        "off", cli=("--proxy-protocol",), cli_const="auto",
        help="Read a PROXY protocol header (HAProxy, stunnel) at the start of each connection: "
        "off, v1, v2 or auto (--proxy-protocol alone: auto). The header is optional; its "
        "client address becomes REMOTE_ADDR. From a peer outside proxy_allow_ips it is a 403.")
    proxy_allow_ips: StrList = setting(
        ["127.0.0.1", "::1"], cli=("--proxy-allow-from",),
        help="Peers allowed to send a PROXY header (comma-separated addresses and CIDR ranges; "
        "'*': every peer). A unix-socket peer always is.")
    statsd_host: str | None = setting(
        None, cli=("--statsd-host",),
        help="Send StatsD metrics with gunicorn's names (gunicorn.requests, "
        "gunicorn.request.duration, gunicorn.request.status.<code>, gunicorn.workers, "
        "gunicorn.log.<level>) to HOST:PORT (UDP) or unix://PATH. Default: none.")
    statsd_prefix: str = setting(
        "", cli=("--statsd-prefix",),
        help="A prefix for every StatsD name (a dot is added after it).")
    dogstatsd_tags: str = setting(
        "", cli=("--dogstatsd-tags",),
        help="DogStatsD tags appended to every StatsD metric, e.g. 'env:prod,team:web'.")
    limit_request_line: int = setting(
        4094, cli=("--limit-request-line",), ge=0, le=HARD_MAX_REQUEST_LINE,
        help=f"Longest request line in bytes (414 beyond). 0: the hard ceiling, {HARD_MAX_REQUEST_LINE}.")
    limit_request_fields: int = setting(
        100, cli=("--limit-request-fields",), ge=0, le=HARD_MAX_FIELDS,
        help=f"Most header fields in a request (431 beyond). 0: the hard ceiling, {HARD_MAX_FIELDS}.")
    limit_request_field_size: int = setting(
        8190, cli=("--limit-request-field_size", "--limit-request-field-size"), ge=0,
        le=HARD_MAX_FIELD_SIZE,
        help=f"Largest header field in bytes (431 beyond). 0: the hard ceiling, {HARD_MAX_FIELD_SIZE}.")
    limit_request_body: int = setting(
        0, gunicorn=False, cli=("--limit-request-body",), ge=0,
        help="Largest request body in bytes (413 beyond). 0: no limit (nginx's client_max_body_size "
        "usually applies first).")
    websocket_ping_interval: float = setting(
        20.0, gunicorn=False, cli=("--websocket-ping-interval",), ge=0, le=3600,
        help="Seconds between the server's pings on an idle WebSocket; a peer that does not answer "
        "within another interval is disconnected (close 1011). Keep nginx's proxy_read_timeout "
        "above it. 0: no pings.")
    websocket_max_message_size: MemorySize = setting(
        "16MiB", cli=("--websocket-max-message-size",),
        help="Largest WebSocket message a client may send (close 1009 beyond); 512K, 16M (a bare "
        "number is MiB).")
    websocket_max_connections: int = setting(
        1000, gunicorn=False, cli=("--websocket-max-connections",), ge=1, le=1_000_000,
        help="Most open WebSockets per worker; further upgrades get 503.")
    websocket_idle_timeout: float = setting(
        0.0, gunicorn=False, cli=("--websocket-idle-timeout",), ge=0, le=86400,
        help="Close a WebSocket (1000) after this many seconds without a message in either "
        "direction. 0: never (pings still detect dead peers).")
    raw_env: StrList = setting(
        [], cli=("-e", "--env"), help="KEY=VALUE set in the environment of the workers. Repeatable.")
    reload: bool = setting(
        False, cli=("--reload",),
        help="Development: reload the workers when a loaded Python file changes.")
    reload_extra_files: StrList = setting(
        [], cli=("--reload-extra-file",),
        help="With --reload: more files to watch (templates, configs). Entries with *, ? or [ "
        "are glob patterns (** recurses), expanded again at every check, so a file created "
        "later is watched too; its first edit, not its creation, reloads.")

    # ---- server hooks: gunicorn's names, signatures and moments (see appserver/hooks.py) ------
    on_starting: Hook = setting(None, hook=(1,), help="Hook on_starting(server): in the master, "
                                "before the sockets are bound.")
    on_reload: Hook = setting(None, hook=(1,), help="Hook on_reload(server): in the master, on "
                              "HUP, once the new settings are loaded.")
    when_ready: Hook = setting(None, hook=(1,), help="Hook when_ready(server): in the master, "
                               "once it listens, before the first workers are forked.")
    pre_fork: Hook = setting(None, hook=(2,), help="Hook pre_fork(server, worker): in the master, "
                             "just before a worker is forked.")
    post_fork: Hook = setting(None, hook=(2,), help="Hook post_fork(server, worker): in the new "
                              "worker, before it loads the app. If it raises, the worker fails "
                              "to boot and the server stops, as gunicorn's does.")
    post_worker_init: Hook = setting(None, hook=(1,), help="Hook post_worker_init(worker): in the "
                                     "worker, once the app is loaded. Raising fails the boot.")
    worker_int: Hook = setting(None, hook=(1,), help="Hook worker_int(worker): in the worker, on "
                               "SIGINT or SIGQUIT, before it exits.")
    worker_abort: Hook = setting(None, hook=(1,), help="Hook worker_abort(worker): in the worker, "
                                 "on SIGABRT (sent when it timed out), before it dies.")
    pre_exec: Hook = setting(None, hook=(1,), help="Hook pre_exec(server): in the forked child, "
                             "just before the new master is exec'd (USR2).")
    pre_request: Hook = setting(None, hook=(2,), help="Hook pre_request(worker, req): in the "
                                "worker, before the app is called. If it raises, the client gets "
                                "a 500, as with gunicorn.")
    post_request: Hook = setting(None, hook=(2, 3, 4), help="Hook post_request(worker, req, "
                                 "environ, resp): in the worker, after the response (and its "
                                 "access log line).")
    child_exit: Hook = setting(None, hook=(2,), help="Hook child_exit(server, worker): in the "
                               "master, once a worker has exited and been reaped.")
    worker_exit: Hook = setting(None, hook=(2,), help="Hook worker_exit(server, worker): in the "
                                "worker, as it exits (after it served its last request).")
    nworkers_changed: Hook = setting(None, hook=(3,), help="Hook nworkers_changed(server, "
                                     "new_value, old_value): in the master, when the wanted "
                                     "number of workers changes (TTIN, TTOU, reload).")
    on_exit: Hook = setting(None, hook=(1,), help="Hook on_exit(server): in the master, just "
                            "before it exits.")
    ssl_context: Hook = setting(None, hook=(2,), help="Hook ssl_context(config, "
                                "default_ssl_context_factory): not supported yet -- the server "
                                "has no TLS listeners; terminate TLS in nginx.")

    @field_validator("bind")
    @classmethod
    def _valid_bind(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_bind(item)
        return value

    @field_validator("forwarded_allow_ips", "proxy_allow_ips")
    @classmethod
    def _allow_list(cls, value: list[str]) -> list[str]:
        parse_allow_list(value)
        return value

    @field_validator("user", mode="before")
    @classmethod
    def _known_user(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        resolve_user(value)
        return str(value)

    @field_validator("group", mode="before")
    @classmethod
    def _known_group(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        resolve_group(value)
        return str(value)

    @property
    def worker_identity(self) -> Identity:
        return Identity(None if self.user is None else resolve_user(self.user),
                        None if self.group is None else resolve_group(self.group),
                        self.initgroups)

    @field_validator("statsd_host")
    @classmethod
    def _statsd_address(cls, value: str | None) -> str | None:
        if value:
            parse_statsd_address(value)
        return value or None

    @field_validator("worker_class")
    @classmethod
    def _known_worker(cls, value: str) -> str:
        return worker_class_name(value)

    @field_validator("raw_env")
    @classmethod
    def _key_value(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item or not item.split("=", 1)[0]:
                raise ValueError(f"{item!r} is not KEY=VALUE")
        return value

    @field_validator("wsgi_app")
    @classmethod
    def _app_spec(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+(:[\w.]+(\(.*\))?)?", value):
            raise ValueError(f"{value!r} is not MODULE:CALLABLE or MODULE:factory()")
        return value

    @field_validator("*")
    @classmethod
    def _hook_arity(cls, value: Any, info: ValidationInfo) -> Any:
        """A hook must take gunicorn's arguments (its validate_callable checks the same)."""
        arities = hook_arities(info.field_name or "")
        if not arities or value is None:
            return value
        if info.field_name == "ssl_context":
            raise ValueError("not supported yet: the server has no TLS listeners of its own; "
                             "terminate TLS in nginx (the bundle does)")
        if not callable(value):
            raise ValueError(f"{value!r} is not callable")
        try:
            arity = positional_arity(value)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return value
        if arity not in arities:
            wanted = " or ".join(map(str, arities))
            raise ValueError(f"a hook {info.field_name} takes {wanted} positional arguments, "
                             f"{getattr(value, '__qualname__', value)!r} takes {arity}")
        return value

    # ---- derived values ------------------------------------------------------------------

    @property
    def addresses(self) -> list[BindAddress]:
        return [parse_bind(item) for item in self.bind]

    @property
    def effective_worker_class(self) -> str:
        """gunicorn's rule: sync with more than one thread means gthread."""
        if self.worker_class == "sync" and self.threads > 1:
            return "gthread"
        return self.worker_class

    @property
    def max_request_line(self) -> int:
        return self.limit_request_line or HARD_MAX_REQUEST_LINE

    @property
    def max_fields(self) -> int:
        return self.limit_request_fields or HARD_MAX_FIELDS

    @property
    def max_field_size(self) -> int:
        return self.limit_request_field_size or HARD_MAX_FIELD_SIZE

    @property
    def env_pairs(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.raw_env)


SETTING_NAMES = tuple(ServerConfig.model_fields)
HOOK_NAMES = tuple(name for name in SETTING_NAMES if hook_arities(name))


def _extra(name: str) -> dict[str, Any]:
    field_info = ServerConfig.model_fields.get(name)
    extra = field_info.json_schema_extra if field_info is not None else None
    return extra if isinstance(extra, dict) else {}


def gunicorn_name(name: str) -> str | None:
    """gunicorn 27's name of one of our settings (None: gunicorn has no such setting)."""
    value = _extra(name).get("gunicorn", True)
    return name if value is True else (value or None)


# gunicorn's spelling -> ours, where they differ: accepted in every source.
ALIASES = {alias: name for name in SETTING_NAMES
           if (alias := gunicorn_name(name)) is not None and alias != name}
ENV_PREFIX = "APPSERVER_"
# Variables the server passes to itself (USR2 upgrade); never settings.
INTERNAL_ENV = {"APPSERVER_FDS", "APPSERVER_PARENT_PID"}


# --------------------------------------------------------------------------------------------
# Loading from the three sources.


@dataclass
class Layer:
    """Values from one source, with a label for each key used in error messages and the
    source's name shown by ``--print-config`` (``origin``; per key in ``origins`` when the keys
    of one layer come from different places, e.g. several environment variables)."""

    values: dict[str, Any]
    labels: dict[str, str]
    origin: str = ""
    origins: dict[str, str] = field(default_factory=dict)

    def origin_of(self, key: str) -> str:
        return self.origins.get(key, self.origin)


@dataclass(frozen=True)
class Resolved:
    """The validated settings and, per setting, where its value came from."""

    config: ServerConfig
    origins: dict[str, str]


def file_layer(path: str | os.PathLike[str]) -> Layer:
    """The ``[server]`` table of a TOML settings file (other tables belong to the bundle)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not UTF-8
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    # A gunicorn-style file that happens to parse as TOML (``workers = 3``) put its settings at
    # the top level, where they used to be ignored without a word.
    loose = [key for key, value in data.items() if not isinstance(value, dict) and key != "server"]
    if loose:
        raise ConfigError(f"{path}: {', '.join(loose)}: outside any table; server settings go "
                          f"in the [server] table (a gunicorn config file is Python: name it "
                          f"*.py)")
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"{path}: [server] must be a table, got {server!r}")
    return Layer(dict(server), {key: f"{path}: [server] {key}" for key in server},
                 origin=f"file {path}")


def web_concurrency_layer(environ: Mapping[str, str]) -> Layer:
    if "WEB_CONCURRENCY" not in environ:
        return Layer({}, {})
    return Layer({"workers": environ["WEB_CONCURRENCY"]},
                 {"workers": "environment WEB_CONCURRENCY"}, origin="env WEB_CONCURRENCY")


def env_layer(environ: Mapping[str, str], *, web_concurrency: bool = True) -> Layer:
    """``APPSERVER_<NAME>`` variables (and WEB_CONCURRENCY, below them, unless the caller
    places it elsewhere: under a gunicorn config file it is only the default worker count)."""
    layer = web_concurrency_layer(environ) if web_concurrency else Layer({}, {})
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in INTERNAL_ENV or name.endswith("_CMD_ARGS"):
            continue
        key = name[len(ENV_PREFIX):].lower()
        layer.values[key] = value
        layer.labels[key] = f"environment {name}"
        layer.origins[key] = f"env {name}"
    layer.origins.update({key: layer.origin for key in layer.values if key not in layer.origins})
    return layer


def cli_layer(values: Mapping[str, Any], flags: Mapping[str, str]) -> Layer:
    return Layer(dict(values), {key: f"command line {flags.get(key, key)}" for key in values},
                 origins={key: f"command line {flags.get(key, key)}" for key in values})


def build_config(*layers: Layer) -> ServerConfig:
    """Merge layers (lowest precedence first) and validate; errors name source, key and value."""
    return resolve(*layers).config


def resolve(*layers: Layer) -> Resolved:
    """Merge layers (lowest precedence first), gunicorn's spellings folded into ours, and
    validate; errors name source, key and value."""
    merged: dict[str, Any] = {}
    labels: dict[str, str] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            name = ALIASES.get(key, key)
            merged[name] = value
            labels[name] = layer.labels.get(key, key)
            origins[name] = layer.origin_of(key)
    problems = []
    for key in merged:
        if key not in ServerConfig.model_fields:
            hint = difflib.get_close_matches(key, [*SETTING_NAMES, *ALIASES], n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(f"{labels.get(key, key)}: unknown setting {key!r}{suggestion}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        config = ServerConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, merged, labels)) from None
    return Resolved(config, {name: origins.get(name, "default") for name in SETTING_NAMES})


def describe_validation_error(exc: ValidationError, values: Mapping[str, Any],
                              labels: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        field_info = ServerConfig.model_fields.get(key)
        where = labels.get(key, f"setting {key}")
        shown = values.get(key, err.get("input"))
        message = err["msg"].removeprefix("Value error, ")
        allowed = (f" ({field_info.description})"
                   if field_info is not None and field_info.description else "")
        lines.append(f"{where} = {shown!r}: {message}.{allowed}")
    return "\n".join(lines)


def load_config(cli_values: Mapping[str, Any] | None = None, *, settings_file: str | None = None,
                environ: Mapping[str, str] | None = None,
                cli_flags: Mapping[str, str] | None = None) -> ServerConfig:
    """Build the config from a TOML settings file, the environment and the command line."""
    layers = []
    if settings_file:
        layers.append(file_layer(settings_file))
    layers.append(env_layer(os.environ if environ is None else environ))
    layers.append(cli_layer(cli_values or {}, cli_flags or {}))
    return build_config(*layers)


def config_as_toml(config: ServerConfig, origins: Mapping[str, str] | None = None) -> str:
    """The resolved settings as a ``[server]`` TOML table (``--print-config``); with
    ``origins``, each value is followed by a comment naming its source."""
    lines = ["[server]"]
    for name, field_info in ServerConfig.model_fields.items():
        value = getattr(config, name)
        if field_info.description:
            lines.append(f"# {field_info.description}")
        source = f"  # {origins.get(name, 'default')}" if origins is not None else ""
        if value is None:
            lines.append(f"# {name} =  (unset){source}")
        elif callable(value) and not _importable(value):
            lines.append(f"# {name} = <{_qualified(value)}> (a callable of a Python config "
                         f"file){source}")
        else:
            lines.append(f"{name} = {setting_as_toml(name, value)}{source}")
    return "\n".join(lines) + "\n"


def _qualified(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _importable(func: Callable[..., Any]) -> bool:
    """A hook that "module.function" imports again (not one defined in a config file)."""
    module = sys.modules.get(getattr(func, "__module__", None) or "")
    name = getattr(func, "__qualname__", "")
    return module is not None and module.__name__ != "__config__" \
        and getattr(module, name, None) is func


def setting_input(name: str, value: Any) -> Any:
    """A validated setting's value in a form that validates back to the same value: octal modes
    as "0660" and sizes with a unit (a bare number would mean MiB), hooks as their import path.
    For writers of settings (--print-config, the bundle) and for code that validates a setting
    a second time."""
    field = ServerConfig.model_fields.get(name)
    if name in ("umask", "socket_mode") and isinstance(value, int):
        return f"{value:04o}"
    if hook_arities(name) and callable(value):
        return _qualified(value)
    if field is not None and isinstance(value, int) and not isinstance(value, bool) \
            and any(getattr(m, "func", None) is _memory_size for m in field.metadata):
        return _size_text(value)
    return value


def setting_as_toml(name: str, value: Any) -> str:
    """A setting's value as TOML that reads back as the same value."""
    return _toml_value(setting_input(name, value))


def _size_text(value: int) -> str:
    for unit, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return f"{value}B"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
