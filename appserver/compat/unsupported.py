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

_BACKLOG = "the listen-backlog metric is not supported yet (StatsD request metrics are)"
_DIRTY = "gunicorn's dirty arbiters are not supported"
_HTTP2 = "HTTP/2 is not supported; nginx speaks HTTP/2 to clients and HTTP/1.1 to the server"
_PARSER = "the HTTP parser's leniency switches are not supported; requests gunicorn would " \
          "need them for are refused (400)"


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
    _u("enable_backlog_metric", ("--enable-backlog-metric",), False, _BACKLOG, True),
    _u("default_proc_name", (), "gunicorn",
       "an internal gunicorn setting; name the processes with proc_name (--name)"),
    _u("sendfile", ("--no-sendfile",), None,
       "sendfile cannot be switched off yet (it is used for file responses)", False),
    _u("reload_engine", ("--reload-engine",), "auto", "the reloader has one engine (polling)"),
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
    _u("http_protocols", ("--http-protocols",), "h1", _HTTP2),
    _u("http2_cleartext", ("--http2-cleartext",), "off", _HTTP2),
    _u("http2_max_concurrent_streams", ("--http2-max-concurrent-streams",), 100, _HTTP2),
    _u("http2_initial_window_size", ("--http2-initial-window-size",), 65535, _HTTP2),
    _u("http2_max_frame_size", ("--http2-max-frame-size",), 16384, _HTTP2),
    _u("http2_max_header_list_size", ("--http2-max-header-list-size",), 65536, _HTTP2),
    _u("dirty_apps", ("--dirty-app",), [], _DIRTY),
    _u("dirty_workers", ("--dirty-workers",), 0, _DIRTY),
    _u("dirty_timeout", ("--dirty-timeout",), 300, _DIRTY),
    _u("dirty_threads", ("--dirty-threads",), 1, _DIRTY),
    _u("dirty_graceful_timeout", ("--dirty-graceful-timeout",), 30, _DIRTY),
    _u("on_dirty_starting", (), None, _DIRTY),
    _u("dirty_post_fork", (), None, _DIRTY),
    _u("dirty_worker_init", (), None, _DIRTY),
    _u("dirty_worker_exit", (), None, _DIRTY),
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
