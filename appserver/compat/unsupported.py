"""The gunicorn 27 settings this server does not offer (yet): one table, so that later work
shrinks it, and the rule that none of them is ever ignored without a word.

A setting given with gunicorn's default value changes nothing under gunicorn either, so it is
accepted with a warning (configs often spell out ``daemon = False``); any other value is an
error at start-up that says what to do instead.  The command line accepts gunicorn's flags for
these settings only to refuse them with the same message, rather than argparse's
"unrecognized arguments".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from ..config import SETTING_NAMES

_TLS = ("the server has no TLS listeners of its own yet; terminate TLS in nginx (the bundle "
        "does, see nginx.tls in settings.toml)")
_BACKLOG = "the listen-backlog metric is not supported yet (StatsD request metrics are)"
_SYSLOG = "syslog is not supported yet; log to stderr or a file (--error-logfile) and let the " \
          "supervisor (systemd, Docker) forward it"
_LOGCONFIG = "logging configuration files are not supported yet; use --error-logfile, " \
             "--access-logfile, --access-logformat and --log-level"
_DIRTY = "gunicorn's dirty arbiters are not supported"
_HTTP2 = "HTTP/2 is not supported; nginx speaks HTTP/2 to clients and HTTP/1.1 to the server"
_ASGI = "the ASGI worker is not available yet"
_PARSER = "the HTTP parser's leniency switches are not supported; requests gunicorn would " \
          "need them for are refused (400)"
_CONTROL = "gunicorn's control socket is not supported; use signals (HUP, TTIN, TTOU, USR2)"
_PASTE = "PasteDeploy apps are not supported yet; name the WSGI app as MODULE:CALLABLE"


@dataclass(frozen=True)
class Unsupported:
    """A gunicorn setting we refuse: its flags, gunicorn's default, why and what instead.
    ``const``: the value its flag stores when the flag takes no argument (store_true)."""

    name: str
    flags: tuple[str, ...]
    default: Any
    why: str
    const: Any = None

    def harmless(self, value: Any) -> bool:
        """Setting it to this value changes nothing under gunicorn either."""
        return value is None or value == self.default


def _u(name: str, flags: tuple[str, ...], default: Any, why: str, const: Any = None) -> Unsupported:
    return Unsupported(name, flags, default, why, const)


UNSUPPORTED: dict[str, Unsupported] = {u.name: u for u in (
    _u("certfile", ("--certfile",), None, _TLS),
    _u("keyfile", ("--keyfile",), None, _TLS),
    _u("ca_certs", ("--ca-certs",), None, _TLS),
    _u("cert_reqs", ("--cert-reqs",), 0, _TLS),
    _u("ciphers", ("--ciphers",), None, _TLS),
    _u("ssl_version", ("--ssl-version",), 2, _TLS),
    _u("do_handshake_on_connect", ("--do-handshake-on-connect",), False, _TLS, True),
    _u("suppress_ragged_eofs", ("--suppress-ragged-eofs",), True, _TLS, True),
    _u("enable_backlog_metric", ("--enable-backlog-metric",), False, _BACKLOG, True),
    _u("syslog", ("--log-syslog",), False, _SYSLOG, True),
    _u("syslog_addr", ("--log-syslog-to",), "udp://localhost:514", _SYSLOG),
    _u("syslog_prefix", ("--log-syslog-prefix",), None, _SYSLOG),
    _u("syslog_facility", ("--log-syslog-facility",), "user", _SYSLOG),
    _u("disable_redirect_access_to_syslog", ("--disable-redirect-access-to-syslog",), False,
       _SYSLOG, True),
    _u("logconfig", ("--log-config",), None, _LOGCONFIG),
    _u("logconfig_dict", (), {}, _LOGCONFIG),
    _u("logconfig_json", ("--log-config-json",), None, _LOGCONFIG),
    _u("logger_class", ("--logger-class",), "gunicorn.glogging.Logger", _LOGCONFIG),
    _u("enable_stdio_inheritance", ("-R", "--enable-stdio-inheritance"), False,
       "not needed: the server never daemonizes, so stdio is always inherited", True),
    _u("daemon", ("-D", "--daemon"), False,
       "the server does not daemonize; run it under a supervisor (systemd, Docker, "
       "`appserver up`)", True),
    _u("default_proc_name", (), "gunicorn",
       "an internal gunicorn setting; name the processes with proc_name (--name)"),
    _u("tmp_upload_dir", (), None, "request bodies are streamed to the app, never spooled"),
    _u("spew", ("--spew",), False, "statement tracing is not supported; use a debugger", True),
    _u("sendfile", ("--no-sendfile",), None,
       "sendfile cannot be switched off yet (it is used for file responses)", False),
    _u("reload_engine", ("--reload-engine",), "auto", "the reloader has one engine (polling)"),
    _u("secure_scheme_headers", (), {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                                     "X-FORWARDED-SSL": "on"},
       "the scheme is read from X-Forwarded-Proto only (from forwarded_allow_ips peers)"),
    _u("forwarder_headers", ("--forwarder-headers",), "SCRIPT_NAME,PATH_INFO",
       "headers cannot set SCRIPT_NAME or PATH_INFO yet"),
    _u("header_map", ("--header-map",), "drop",
       "headers with underscores are always dropped (gunicorn's default)"),
    _u("root_path", ("--root-path",), "", "set SCRIPT_NAME in the environment instead"),
    _u("protocol", ("--protocol",), "http", "only HTTP is served (no uwsgi protocol)"),
    _u("uwsgi_allow_ips", ("--uwsgi-allow-from",), "127.0.0.1,::1",
       "only HTTP is served (no uwsgi protocol)"),
    _u("http_parser", ("--http-parser",), "auto", "the server has one HTTP parser (httptools)"),
    _u("permit_obsolete_folding", ("--permit-obsolete-folding",), False, _PARSER, True),
    _u("strip_header_spaces", ("--strip-header-spaces",), False, _PARSER, True),
    _u("permit_unconventional_http_method", ("--permit-unconventional-http-method",), False,
       _PARSER, True),
    _u("permit_unconventional_http_version", ("--permit-unconventional-http-version",), False,
       _PARSER, True),
    _u("casefold_http_method", ("--casefold-http-method",), False, _PARSER, True),
    _u("paste", ("--paste", "--paster"), None, _PASTE),
    _u("raw_paste_global_conf", ("--paste-global",), [], _PASTE),
    _u("http_protocols", ("--http-protocols",), "h1", _HTTP2),
    _u("http2_cleartext", ("--http2-cleartext",), "off", _HTTP2),
    _u("http2_max_concurrent_streams", ("--http2-max-concurrent-streams",), 100, _HTTP2),
    _u("http2_initial_window_size", ("--http2-initial-window-size",), 65535, _HTTP2),
    _u("http2_max_frame_size", ("--http2-max-frame-size",), 16384, _HTTP2),
    _u("http2_max_header_list_size", ("--http2-max-header-list-size",), 65536, _HTTP2),
    _u("asgi_loop", ("--asgi-loop",), "auto", _ASGI),
    _u("asgi_lifespan", ("--asgi-lifespan",), "auto", _ASGI),
    _u("asgi_disconnect_grace_period", ("--asgi-disconnect-grace-period",), 3, _ASGI),
    _u("dirty_apps", ("--dirty-app",), [], _DIRTY),
    _u("dirty_workers", ("--dirty-workers",), 0, _DIRTY),
    _u("dirty_timeout", ("--dirty-timeout",), 300, _DIRTY),
    _u("dirty_threads", ("--dirty-threads",), 1, _DIRTY),
    _u("dirty_graceful_timeout", ("--dirty-graceful-timeout",), 30, _DIRTY),
    _u("on_dirty_starting", (), None, _DIRTY),
    _u("dirty_post_fork", (), None, _DIRTY),
    _u("dirty_worker_init", (), None, _DIRTY),
    _u("dirty_worker_exit", (), None, _DIRTY),
    _u("control_socket", ("--control-socket",), None, _CONTROL),
    _u("control_socket_mode", ("--control-socket-mode",), 384, _CONTROL),
    _u("control_socket_disable", ("--no-control-socket",), False, _CONTROL, True),
)}

# Settings of gunicorn that are options of the command itself here, not settings.
COMMAND_OPTIONS = {"config": "-c/--config", "print_config": "--print-config",
                   "check_config": "--check-config"}

_DEST = "unsupported__"


def describe(name: str, value: Any, where: str) -> tuple[bool, str]:
    """(is it an error, the message) for an unsupported setting given a value."""
    entry = UNSUPPORTED[name]
    if entry.harmless(value):
        return False, (f"{where}: {name} = {value!r} is ignored: not supported yet, and this "
                       f"is gunicorn's default, so nothing changes ({entry.why})")
    return True, f"{where}: {name} is not supported yet: {entry.why}"


def add_options(parser: argparse.ArgumentParser) -> None:
    """gunicorn's flags for these settings, hidden from --help, so that they are refused
    with the reason (see :func:`given_options`)."""
    for entry in UNSUPPORTED.values():
        if not entry.flags or entry.name in SETTING_NAMES:
            continue  # a setting now: its real option is there (tests/gunicorn_compat says so)
        dest = _DEST + entry.name
        if entry.const is not None:
            parser.add_argument(*entry.flags, dest=dest, action="store_const", const=entry.const,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            parser.add_argument(*entry.flags, dest=dest, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def given_options(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """The unsupported flags present in parsed arguments: name -> (flag, value)."""
    found = {}
    for key, value in vars(args).items():
        if key.startswith(_DEST):
            name = key[len(_DEST):]
            found[name] = (UNSUPPORTED[name].flags[-1], value)
    return found
