"""The app server's settings, each declared exactly once.

Every setting is a field of :class:`ServerConfig` with its type, default, bounds and help text.  The
command line (:mod:`appserver.cli`), ``--print-config``, the JSON schema and ``docs/settings.md`` are
all generated from these declarations, so a setting cannot be documented one way and parsed another.

Sources, highest precedence first: command line > environment (``APPSERVER_<NAME>``, and
``WEB_CONCURRENCY`` for the worker count) > the ``[server]`` table of a TOML file > default.
Unknown keys are errors, and every error names where the value came from, the key, the value and
what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from .binds import BindAddress, parse_bind
from .forwarded import parse_allow_list
from .machine import default_heartbeat_dir, default_workers

# Worker classes known to the server; each is imported lazily by appserver.workers.
WORKER_CLASSES = ("sync", "gthread", "gevent", "eventlet", "tornado", "asyncio")
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


StrList = Annotated[list[str], BeforeValidator(_split_list)]
OctalMode = Annotated[int, BeforeValidator(_octal), Field(ge=0, le=0o7777)]
MemorySize = Annotated[int, BeforeValidator(_memory_size), Field(ge=0)]


def setting(default: Any = None, *, help: str, cli: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Declare a setting: its default, help text, CLI flags and bounds, all in one place."""
    extra: dict[str, Any] = {"cli": list(cli)}
    if callable(default):
        return Field(default_factory=default, description=help, json_schema_extra=extra, **kwargs)
    return Field(default=default, description=help, json_schema_extra=extra, **kwargs)


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
        "auto", cli=("--loop",),
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
        5, cli=("--keep-alive",), ge=0, le=3600,
        help="Seconds an idle keep-alive connection stays open. Keep it above nginx's upstream "
        "keepalive_timeout so that nginx, not the server, closes idle connections. 0: no keep-alive.")
    header_timeout: float = setting(
        10.0, cli=("--header-timeout",), gt=0, le=3600,
        help="Seconds a client gets to send a complete request head (slowloris defence); also the "
        "longest a request body read or a response write may go without progress.")
    max_requests: int = setting(
        0, cli=("--max-requests",), ge=0,
        help="Recycle a worker after this many requests (plus jitter). 0: never.")
    max_requests_jitter: int = setting(
        0, cli=("--max-requests-jitter",), ge=0,
        help="Random 0..N added to --max-requests per worker, so workers do not recycle together.")
    max_worker_memory: MemorySize = setting(
        0, cli=("--max-worker-memory",),
        help="Recycle a worker whose resident memory exceeds this size (512M, 1G; a bare number "
        "is MiB). 0: never.")
    backlog: int = setting(
        2048, cli=("--backlog",), ge=1, le=65535,
        help="Listen backlog: connections the kernel queues while every worker is busy.")
    umask: OctalMode = setting(0, cli=("--umask",), help="umask of the server processes (octal).")
    socket_mode: OctalMode = setting(
        0o660, cli=("--socket-mode",),
        help="File mode of unix sockets (octal). nginx's worker user needs write permission.")
    socket_group: str | None = setting(
        None, cli=("--socket-group",),
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
        False, cli=("--access-log-json",),
        help="Write the access log as JSON lines (one object per request) instead of the format.")
    errorlog: str = setting("-", cli=("--error-logfile", "--log-file"), help="Error log file; '-' is stderr.")
    loglevel: Literal["debug", "info", "warning", "error", "critical"] = setting(
        "info", cli=("--log-level",), help="Error log level: " + ", ".join(LOG_LEVELS) + ".")
    forwarded_allow_ips: StrList = setting(
        ["127.0.0.1", "::1"], cli=("--forwarded-allow-ips",),
        help="Peers allowed to send X-Forwarded-For/-Proto (comma-separated addresses and CIDR "
        "ranges; '*': every peer). A unix-socket peer (nginx) always is. Says who may send "
        "them, never how many of their entries are believed: see forwarded_hops.")
    forwarded_hops: int = setting(
        1, cli=("--forwarded-hops",), ge=1, le=32,
        help="Proxies in front that append to X-Forwarded-For/-Proto: the entry this many places "
        "from the right is believed (REMOTE_ADDR, wsgi.url_scheme), everything left of it is "
        "ignored; a header with fewer entries is ignored whole (Werkzeug ProxyFix's x_for).")
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
        0, cli=("--limit-request-body",), ge=0,
        help="Largest request body in bytes (413 beyond). 0: no limit (nginx's client_max_body_size "
        "usually applies first).")
    websocket_ping_interval: float = setting(
        20.0, cli=("--websocket-ping-interval",), ge=0, le=3600,
        help="Seconds between the server's pings on an idle WebSocket; a peer that does not answer "
        "within another interval is disconnected (close 1011). Keep nginx's proxy_read_timeout "
        "above it. 0: no pings.")
    websocket_max_message_size: MemorySize = setting(
        "16MiB", cli=("--websocket-max-message-size",),
        help="Largest WebSocket message a client may send (close 1009 beyond); 512K, 16M (a bare "
        "number is MiB).")
    websocket_max_connections: int = setting(
        1000, cli=("--websocket-max-connections",), ge=1, le=1_000_000,
        help="Most open WebSockets per worker; further upgrades get 503.")
    websocket_idle_timeout: float = setting(
        0.0, cli=("--websocket-idle-timeout",), ge=0, le=86400,
        help="Close a WebSocket (1000) after this many seconds without a message in either "
        "direction. 0: never (pings still detect dead peers).")
    raw_env: StrList = setting(
        [], cli=("-e", "--env"), help="KEY=VALUE set in the environment of the workers. Repeatable.")
    reload: bool = setting(
        False, cli=("--reload",),
        help="Development: reload the workers when a loaded Python file changes.")

    @field_validator("bind")
    @classmethod
    def _valid_bind(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_bind(item)
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _allow_list(cls, value: list[str]) -> list[str]:
        parse_allow_list(value)
        return value

    @field_validator("worker_class")
    @classmethod
    def _known_worker(cls, value: str) -> str:
        if value not in WORKER_CLASSES:
            raise ValueError(f"{value!r} is not a worker class; choose one of {', '.join(WORKER_CLASSES)}")
        return value

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
ENV_PREFIX = "APPSERVER_"
# Variables the server passes to itself (USR2 upgrade); never settings.
INTERNAL_ENV = {"APPSERVER_FDS", "APPSERVER_PARENT_PID"}


# --------------------------------------------------------------------------------------------
# Loading from the three sources.


@dataclass
class Layer:
    """Values from one source, with a label for each key used in error messages."""

    values: dict[str, Any]
    labels: dict[str, str]


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
    server = data.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError(f"{path}: [server] must be a table, got {server!r}")
    return Layer(dict(server), {key: f"{path}: [server] {key}" for key in server})


def env_layer(environ: Mapping[str, str]) -> Layer:
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    if "WEB_CONCURRENCY" in environ:
        values["workers"] = environ["WEB_CONCURRENCY"]
        labels["workers"] = "environment WEB_CONCURRENCY"
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in INTERNAL_ENV:
            continue
        key = name[len(ENV_PREFIX):].lower()
        values[key] = value
        labels[key] = f"environment {name}"
    return Layer(values, labels)


def cli_layer(values: Mapping[str, Any], flags: Mapping[str, str]) -> Layer:
    return Layer(dict(values), {key: f"command line {flags.get(key, key)}" for key in values})


def build_config(*layers: Layer) -> ServerConfig:
    """Merge layers (lowest precedence first) and validate; errors name source, key and value."""
    merged: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for layer in layers:
        merged.update(layer.values)
        labels.update(layer.labels)
    problems = []
    for key in merged:
        if key not in ServerConfig.model_fields:
            hint = difflib.get_close_matches(key, SETTING_NAMES, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(f"{labels.get(key, key)}: unknown setting {key!r}{suggestion}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return ServerConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, merged, labels)) from None


def describe_validation_error(exc: ValidationError, values: Mapping[str, Any],
                              labels: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        field = ServerConfig.model_fields.get(key)
        where = labels.get(key, f"setting {key}")
        shown = values.get(key, err.get("input"))
        message = err["msg"].removeprefix("Value error, ")
        allowed = f" ({field.description})" if field is not None and field.description else ""
        lines.append(f"{where} = {shown!r}: {message}.{allowed}")
    return "\n".join(lines)


def load_config(cli_values: Mapping[str, Any] | None = None, *, settings_file: str | None = None,
                environ: Mapping[str, str] | None = None,
                cli_flags: Mapping[str, str] | None = None) -> ServerConfig:
    """Build the config from a settings file, the environment and the command line."""
    layers = []
    if settings_file:
        layers.append(file_layer(settings_file))
    layers.append(env_layer(os.environ if environ is None else environ))
    layers.append(cli_layer(cli_values or {}, cli_flags or {}))
    return build_config(*layers)


def config_as_toml(config: ServerConfig) -> str:
    """The resolved settings as a ``[server]`` TOML table (``--print-config``)."""
    lines = ["[server]"]
    for name, field in ServerConfig.model_fields.items():
        value = getattr(config, name)
        if field.description:
            lines.append(f"# {field.description}")
        if value is None:
            lines.append(f"# {name} =  (unset)")
            continue
        lines.append(f"{name} = {setting_as_toml(name, value)}")
    return "\n".join(lines) + "\n"


def setting_input(name: str, value: Any) -> Any:
    """A validated setting's value in a form that validates back to the same value: octal modes
    as "0660" and sizes with a unit (a bare number would mean MiB).  For writers of settings
    (--print-config, the bundle) and for code that validates a setting a second time."""
    field = ServerConfig.model_fields.get(name)
    if name in ("umask", "socket_mode") and isinstance(value, int):
        return f"{value:04o}"
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
