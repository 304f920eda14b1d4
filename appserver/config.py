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

import configparser
import difflib
import importlib
import inspect
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ._build import COMPILE_ENV, PURE_ENV
from .binds import BindAddress, parse_bind, parse_statsd_address, parse_syslog_address
from .forwarded import DEFAULT_FORWARDER_HEADERS, DEFAULT_SCHEME_HEADERS, parse_allow_list
from .machine import default_heartbeat_dir, default_workers
from .privileges import Identity, resolve_group, resolve_user

# Worker classes known to the server; each is imported lazily by appserver.workers.
WORKER_CLASSES = ("sync", "gthread", "gevent", "eventlet", "tornado", "asyncio", "aiohttp")
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
    # aiohttp's own classes for gunicorn: ours serves the same aiohttp.web.Application.
    "aiohttp.GunicornWebWorker": "aiohttp", "aiohttp.worker.GunicornWebWorker": "aiohttp",
    "aiohttp.GunicornUVLoopWebWorker": "aiohttp",
    "aiohttp.worker.GunicornUVLoopWebWorker": "aiohttp",
}
# Names other servers use for their ASGI workers: ours is the asyncio class with interface
# "asgi" (gunicorn 27's ``-k asgi``; uvicorn's worker is in countless Dockerfiles).
ASGI_WORKER_CLASSES = ("asgi", "gunicorn.workers.gasgi.ASGIWorker", "uvicorn.workers.UvicornWorker",
                       "uvicorn.workers.UvicornH11Worker", "uvicorn_worker.UvicornWorker")
# Classes other servers ship for gunicorn, and what to use here instead.
FOREIGN_WORKER_CLASSES: dict[str, str] = {}
INTERFACES = ("wsgi", "asgi")


def worker_class_name(value: str) -> str:
    """Our name for a worker class given as ours or as gunicorn names it; ValueError naming
    what to use for anything else."""
    name = value.removeprefix("egg:gunicorn#")
    name = GUNICORN_WORKER_CLASSES.get(name, name)
    if name in ASGI_WORKER_CLASSES:
        return "asyncio"
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


def _scheme_headers(value: Any) -> Any:
    """gunicorn's secure_scheme_headers dict; from the environment, JSON or NAME=VALUE pairs.
    Names are made upper case (gunicorn compares upper-case names only); values stay exact."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a JSON object") from None
        else:
            pairs = [item.partition("=") for item in text.split(",") if item.strip()]
            if any(not sep or not name.strip() for name, sep, _ in pairs):
                raise ValueError(f"{value!r} is not NAME=VALUE,NAME=VALUE")
            value = {name: rest for name, _, rest in pairs}
    if isinstance(value, dict):
        result = {}
        for name, expected in value.items():
            if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+",
                                                            name.strip()):
                raise ValueError(f"{name!r} is not a header name")
            if not isinstance(expected, str):
                raise ValueError(f"{name}: the value meaning https must be a string, got "
                                 f"{expected!r}")
            result[name.strip().upper()] = expected.strip()
        return result
    return value


SchemeHeaders = Annotated[dict[str, str], BeforeValidator(_scheme_headers)]
HeaderMap = Annotated[Literal["drop", "refuse", "dangerous"],
                      BeforeValidator(lambda value: value.strip().lower()
                                      if isinstance(value, str) else value)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error", "critical"],
                     BeforeValidator(lambda value: value.lower() if isinstance(value, str) else value)]
OctalMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o7777)]
OCTAL_SETTINGS = ("umask", "socket_mode", "control_socket_mode")  # written as 0660, not 432
MemorySize = Annotated[int, BeforeValidator(_memory_size), Field(ge=0)]
# A hook: a callable, or its import path.  In the JSON schema (TOML, environment) it is a string.
Hook = Annotated[Callable[..., Any] | None, BeforeValidator(_import_callable),
                 WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}]})]


# ---- the logging settings' value types (appserver/logs.py, appserver/logconfig.py) -----------

# Syslog facility names, as gunicorn accepts them, and their codes (RFC 5424 §6.2.1; "security"
# is an old name of auth).
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "security": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
# logger_class values that mean the server's own logging: gunicorn's default class, its
# "simple" shorthand, and its StatsD class (the server sends StatsD itself, see statsd_host).
DEFAULT_LOGGER_CLASSES = ("gunicorn.glogging.Logger", "simple", "gunicorn.instrument.statsd.Statsd")


def _json_object(value: Any) -> Any:
    """A dict-valued setting given as text (the environment): a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
    return value


def _syslog_address(value: str) -> str:
    parse_syslog_address(value)
    return value


def _syslog_facility(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        if value not in SYSLOG_FACILITIES:
            raise ValueError(f"{value!r} is no syslog facility; one of "
                             f"{', '.join(SYSLOG_FACILITIES)}")
    return value


def _logger_class(value: Any) -> Any:
    """A class or its import path, as gunicorn's validate_class takes it (a function is called
    for the class).  Imported in the master at start-up (appserver.logs), after --chdir and
    --pythonpath apply; here only its shape is checked."""
    if inspect.isfunction(value) or inspect.ismethod(value):
        value = value()
    if inspect.isclass(value):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a class or an import path such as "
                         f"mypkg.logging.MyLogger")
    return value.strip()


def is_default_logger_class(value: Any) -> bool:
    """True when ``logger_class`` asks for the server's own logging (see DEFAULT_LOGGER_CLASSES)."""
    if inspect.isclass(value):
        value = f"{value.__module__}.{value.__qualname__}"
    return value in DEFAULT_LOGGER_CLASSES


LogConfigDict = Annotated[dict[str, Any], BeforeValidator(_json_object)]
SyslogAddress = Annotated[str, AfterValidator(_syslog_address)]
SyslogFacility = Annotated[str, BeforeValidator(_syslog_facility),
                          WithJsonSchema({"type": "string", "enum": list(SYSLOG_FACILITIES)})]
LoggerClass = Annotated[Any, BeforeValidator(_logger_class), WithJsonSchema({"type": "string"})]


_VERIFY_MODES = {"CERT_NONE": 0, "CERT_OPTIONAL": 1, "CERT_REQUIRED": 2}


def _verify_mode(value: Any) -> Any:
    """gunicorn's cert_reqs: 0, 1, 2 (ssl.CERT_* are these ints), or their names."""
    if isinstance(value, str) and value.strip().upper().removeprefix("SSL.") in _VERIFY_MODES:
        return _VERIFY_MODES[value.strip().upper().removeprefix("SSL.")]
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)  # an ssl.VerifyMode member
    return value


TLSVerifyMode = Annotated[int, BeforeValidator(_verify_mode), Field(ge=0, le=2)]


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
        help="Worker class: " + ", ".join(WORKER_CLASSES) + ". 'asgi' (gunicorn 27's ASGI "
        "worker) and uvicorn's worker classes mean asyncio with interface 'asgi'.")
    interface: Literal["wsgi", "asgi"] = setting(
        "wsgi", gunicorn=False, cli=("--interface",),
        help="The app's interface: 'wsgi' (PEP 3333, every class) or 'asgi' (ASGI 3.0 HTTP and "
        "lifespan; the asyncio class). Set by -k asgi.")
    asgi_lifespan: Literal["auto", "on", "off"] = setting(
        "auto", cli=("--asgi-lifespan",),
        help="ASGI lifespan protocol: auto (run it; an app that raises on it does not support "
        "it), on (an app that does not complete startup stops the server), off. A "
        "lifespan.startup.failed stops the server in auto and on.")
    root_path: str = setting(
        "", cli=("--root-path",),
        help="The path the app is mounted at behind a proxy, e.g. /api: the ASGI scope's "
        "root_path (prefixed to path when the request's path lacks it) and the WSGI "
        "SCRIPT_NAME (over the SCRIPT_NAME environment variable). Empty: none.")
    asgi_disconnect_grace_period: int = setting(
        3, cli=("--asgi-disconnect-grace-period",), ge=0, le=86400,
        help="Seconds an ASGI app's request task has after its client went away (it gets "
        "http.disconnect, and send() raises) before the task is cancelled; 0: at once. Not "
        "applied once the response is complete (background tasks run on).")
    threads: int = setting(
        1, cli=("--threads",), ge=1, le=4096,
        help="Threads per worker: the gthread class's threads (sync with --threads > 1 means "
        "gthread), and the app pool of the asyncio and tornado classes (64 when left at 1).")
    asyncio_loop: Literal["auto", "asyncio", "uvloop"] = setting(
        "auto", gunicorn="asgi_loop", cli=("--loop", "--asgi-loop"),
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
    # ---- logging configuration, gunicorn's way (appserver/logs.py, appserver/logconfig.py) ------
    logconfig: str | None = setting(
        None, cli=("--log-config",),
        help="A logging config file (Python's logging.config.fileConfig ini format; "
        "%(here)s is its directory), applied after the settings above, existing loggers kept. "
        "The server logs as gunicorn.error and gunicorn.access. logconfig_dict and "
        "logconfig_json take precedence.")
    logconfig_dict: LogConfigDict = setting(
        {},
        help="A logging.config.dictConfig dict (a config-file dict, a TOML table, JSON in the "
        "environment), over gunicorn's defaults key by key: root, gunicorn.error and "
        "gunicorn.access to the console unless the dict's own 'loggers', 'handlers', "
        "'formatters' or 'root' replace them. Takes precedence over logconfig_json and "
        "logconfig.")
    logconfig_json: str | None = setting(
        None, cli=("--log-config-json",),
        help="A JSON file holding a logconfig_dict (same defaults). Takes precedence over "
        "logconfig.")
    syslog: bool = setting(
        False, cli=("--log-syslog",),
        help="Also send the error log (and the access log, see "
        "disable_redirect_access_to_syslog) to syslog at syslog_addr.")
    syslog_addr: SyslogAddress = setting(
        "udp://localhost:514", cli=("--log-syslog-to",),
        help="Where syslog listens: udp://HOST:PORT, tcp://HOST:PORT or unix://PATH (#dgram "
        "or #stream after it; unpinned, a datagram socket is tried first), e.g. "
        "unix:///dev/log.")
    syslog_prefix: str | None = setting(
        None, cli=("--log-syslog-prefix",),
        help="The program name in syslog lines: 'gunicorn.PREFIX.error' and "
        "'gunicorn.PREFIX.access'. Default: proc_name, else the app (MODULE.CALLABLE).")
    syslog_facility: SyslogFacility = setting(
        "user", cli=("--log-syslog-facility",),
        help="Syslog facility: " + ", ".join(SYSLOG_FACILITIES) + ".")
    disable_redirect_access_to_syslog: bool = setting(
        False, cli=("--disable-redirect-access-to-syslog",),
        help="With --log-syslog: keep the access log out of syslog.")
    logger_class: LoggerClass = setting(
        "gunicorn.glogging.Logger", cli=("--logger-class",),
        help="gunicorn's logger class: its default (or 'simple', or its StatsD class) means the "
        "server's own logging; any other import path (or a class in a config file) is a class "
        "with the interface of gunicorn.glogging.Logger, built in the master with the settings "
        "and called for every error log message and access line.")
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
    # ---- forwarded headers, gunicorn's way (appserver/forwarded.py) ----------------------------
    secure_scheme_headers: SchemeHeaders = setting(
        dict(DEFAULT_SCHEME_HEADERS),
        help="Headers from forwarded_allow_ips peers that tell the scheme: header name -> the "
        "value meaning https (any other value: http). Two listed headers that disagree are a 400. "
        "X-Forwarded-Proto, when listed, is read at the forwarded_hops entry (case-insensitive); "
        "the others are compared whole and exactly. A config-file dict, a TOML table, or "
        "NAME=VALUE,NAME=VALUE (JSON also) in the environment.")
    forwarder_headers: StrList = setting(
        list(DEFAULT_FORWARDER_HEADERS), cli=("--forwarder-headers",),
        help="Header names with '_' that forwarded_allow_ips peers may send to the app "
        "(comma-separated; '*': all): they reach it as HTTP_<NAME>, and a SCRIPT_NAME header "
        "also sets SCRIPT_NAME (stripped from PATH_INFO). From other peers header_map applies.")
    header_map: HeaderMap = setting(
        "drop", cli=("--header-map",),
        help="Header names with '_' (other than trusted forwarder_headers): drop them (as nginx "
        "does), refuse the request (400), or 'dangerous': map them to HTTP_<NAME> like the "
        "others, where X_Foo and X-Foo share one key.")
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
    # ---- the process, gunicorn's way (appserver/daemon.py, appserver/spew.py, loader.py) -----
    daemon: bool = setting(
        False, cli=("-D", "--daemon"),
        help="Detach into the background (double fork, a new session; the working directory is "
        "kept) before the sockets are bound; the pid file then names the daemon. Standard "
        "streams go to /dev/null unless enable_stdio_inheritance: log to a file (--error-logfile).")
    enable_stdio_inheritance: bool = setting(
        False, cli=("-R", "--enable-stdio-inheritance"),
        help="With --daemon: keep stdout and stderr when they are not a terminal (a file or pipe "
        "the launcher redirected them to); stdin is /dev/null either way. Set PYTHONUNBUFFERED "
        "to see prints at once.")
    spew: bool = setting(
        False, cli=("--spew",),
        help="Debugging, the nuclear option: every Python line the workers execute is printed "
        "to stdout as MODULE:LINE: SOURCE (every thread).")
    tmp_upload_dir: str | None = setting(
        None,
        help="Accepted for gunicorn configs and checked to be a writable directory; unused, as "
        "in gunicorn 27 (request bodies are streamed to the app, never spooled).")
    paste: str | None = setting(
        None, cli=("--paste", "--paster"),
        help="Load the app from a PasteDeploy config file: FILE.ini, or FILE.ini#NAME for "
        "[app:NAME] (default main). Replaces MODULE:CALLABLE. Needs the paste extra "
        "(pip install 'appserver[paste]').")
    raw_paste_global_conf: StrList = setting(
        [], cli=("--paste-global",),
        help="KEY=VALUE passed to the PasteDeploy app as a global config variable (\\= for a "
        "literal '='). Repeatable.")
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
    # ---- metrics and the control socket (appserver/metrics, docs/metrics.md) -----------------
    metrics_bind: str | None = setting(
        None, gunicorn=False, cli=("--metrics-bind",),
        help="Serve Prometheus metrics (GET /metrics) from the master on this address: HOST:PORT "
        "or unix:PATH, never the app's listener; the workers then count every request (and "
        "`appserver status` shows their current requests). Default: none (off).")
    control_socket: str | None = setting(
        None, cli=("--control-socket",),
        help="The master's control socket (unix), behind `appserver status` and its reload, "
        "add-worker, remove-worker and stop commands. Default: $XDG_RUNTIME_DIR/appserver.ctl, "
        "else ~/.appserver/appserver.ctl (its directory is created). A path held by another "
        "running master is left to it (logged).")
    control_socket_mode: OctalMode = setting(
        0o600, cli=("--control-socket-mode",),
        help="File mode of the control socket (octal); 0600: only its owner may connect.")
    control_socket_disable: bool = setting(
        False, cli=("--no-control-socket",),
        help="Create no control socket.")
    # ---- TLS on the server's own listeners (gunicorn's SSL section; appserver/tls.py) --------
    certfile: str | None = setting(
        None, cli=("--certfile",),
        help="TLS: the certificate file (PEM; the chain after the certificate, and the key too "
        "when keyfile is not set). With it, every listener speaks HTTPS only (unix sockets "
        "too, as in gunicorn). Behind nginx, leave it unset: nginx terminates TLS.")
    keyfile: str | None = setting(
        None, cli=("--keyfile",),
        help="TLS: the private key file (PEM, not passphrase-protected) of certfile.")
    ca_certs: str | None = setting(
        None, cli=("--ca-certs",),
        help="TLS: CA certificates (PEM) that client certificates are verified against (with "
        "cert_reqs). Default: the system's CAs.")
    cert_reqs: TLSVerifyMode = setting(
        0, cli=("--cert-reqs",),
        help="TLS: client certificates: 0 not asked for, 1 optional (verified if sent), 2 "
        "required (ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED; their names are accepted too).")
    ciphers: str | None = setting(
        None, cli=("--ciphers",),
        help="TLS: the cipher suites, as an OpenSSL cipher list (TLS 1.2 and below). Default: "
        "Python's ssl module's.")
    ssl_version: int | str = setting(
        2, cli=("--ssl-version",),
        help="Deprecated and ignored, as in gunicorn 27 (a warning if set): set "
        "context.minimum_version in an ssl_context hook instead.")
    do_handshake_on_connect: bool = setting(
        False, cli=("--do-handshake-on-connect",),
        help="TLS: accepted for gunicorn configs; every worker class does the handshake right "
        "after the accept either way, within --header-timeout and without blocking the worker.")
    suppress_ragged_eofs: bool = setting(
        True, cli=("--suppress-ragged-eofs",),
        help="TLS: a client that closes without a TLS close_notify is an end of file, not an "
        "error (the ssl module's option).")
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
                                "default_ssl_context_factory): returns the SSLContext of the "
                                "TLS listeners (the factory builds the default one from the TLS "
                                "settings). Called in the master at start-up and once in each "
                                "worker.")

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

    @field_validator("metrics_bind")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value and parse_bind(value).kind == "fd":
            raise ValueError(f"{value!r}: the metrics listener is HOST:PORT or unix:PATH")
        return value or None

    @field_validator("statsd_host")
    @classmethod
    def _statsd_address(cls, value: str | None) -> str | None:
        if value:
            parse_statsd_address(value)
        return value or None

    @field_validator("keyfile")
    @classmethod
    def _key_needs_cert(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not info.data.get("certfile"):
            raise ValueError("a keyfile without a certfile: set certfile too (TLS needs the "
                             "certificate; a certfile may hold the key as well)")
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

    @field_validator("chdir")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        """Absolute, as gunicorn makes it: the master changes directory before forking, so a
        relative path must not be taken again from the new one in each worker."""
        return None if value is None else os.path.abspath(os.path.expanduser(value))

    @field_validator("forwarder_headers")
    @classmethod
    def _upper_names(cls, value: list[str]) -> list[str]:
        return [name.upper() for name in value]

    @field_validator("tmp_upload_dir")
    @classmethod
    def _writable_directory(cls, value: str | None) -> str | None:
        if value and not os.path.isdir(value):
            raise ValueError("not a directory")
        if value and not os.access(value, os.W_OK | os.X_OK):
            raise ValueError("not writable by the server's user")
        return value or None

    @field_validator("paste")
    @classmethod
    def _paste_file(cls, value: str | None) -> str | None:
        """Absolute (the workers load it after --chdir), and the file must exist, as gunicorn
        checks at start-up."""
        if not value:
            return None
        path, sep, name = value.partition("#")
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such file")
        return path + sep + name

    @model_validator(mode="before")
    @classmethod
    def _asgi_worker_names(cls, data: Any) -> Any:
        """``-k asgi`` and uvicorn's classes: the asyncio class serving an ASGI app."""
        if not isinstance(data, dict) or not isinstance(data.get("worker_class"), str):
            return data
        name = data["worker_class"].removeprefix("egg:gunicorn#")
        if name not in ASGI_WORKER_CLASSES:
            return data
        if data.get("interface", "asgi") != "asgi":
            raise ValueError(f"worker_class {name!r} serves ASGI apps, but interface is "
                             f"{data['interface']!r}")
        return {**data, "worker_class": "asyncio", "interface": "asgi"}

    @model_validator(mode="after")
    def _asgi_on_asyncio(self) -> ServerConfig:
        if self.interface == "asgi" and self.worker_class != "asyncio":
            raise ValueError(f"interface 'asgi' needs the asyncio worker class (-k asyncio or "
                             f"-k asgi), not {self.worker_class!r}")
        return self

    @field_validator("root_path")
    @classmethod
    def _mount_point(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("a root path starts with '/' (e.g. /api)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _paste_logging(cls, data: Any) -> Any:
        """gunicorn's --paste: an ini file with logging sections is the default logconfig
        (any logconfig given, from any source, wins)."""
        if not isinstance(data, dict) or not data.get("paste") or "logconfig" in data:
            return data
        path = os.path.abspath(os.path.expanduser(str(data["paste"]).partition("#")[0]))
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read([path])
        except (configparser.Error, UnicodeDecodeError):
            return data  # the paste field's own check, or PasteDeploy, says what is wrong
        if parser.has_section("loggers"):
            data = {**data, "logconfig": path}
        return data

    @field_validator("raw_paste_global_conf")
    @classmethod
    def _global_conf(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.search(r"(?<!\\)=", item):
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
# Not settings: the upgrade hand-off, and which build of the package runs (appserver/_build.py).
# APPSERVER_REDIS_URL is the app's (appserver.broadcast), which the bundle sets for it.
INTERNAL_ENV = {"APPSERVER_FDS", "APPSERVER_PARENT_PID", PURE_ENV, COMPILE_ENV,
                "APPSERVER_REDIS_URL"}
# APPSERVER__TABLE__KEY: an override of the bundle's settings file (appserver/bundle/layering.py),
# applied when the configs are rendered; the server never reads it as a setting of its own.
BUNDLE_ENV_PREFIX = "APPSERVER__"


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
        if name.startswith(BUNDLE_ENV_PREFIX):
            continue  # the bundle's overrides (APPSERVER__NGINX__LISTEN_PORT), read at render
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
    if name in OCTAL_SETTINGS and isinstance(value, int):
        return f"{value:04o}"
    if hook_arities(name) and callable(value):
        return _qualified(value)
    if name == "logger_class" and inspect.isclass(value):
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
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
