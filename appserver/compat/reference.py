"""The migration table: every gunicorn 27 setting and hook, and what this server does with it.

Generated (``appserver settings-doc --gunicorn``) into docs/migrating-from-gunicorn.md, from the
same declarations the server runs on: our settings with their gunicorn names
(:mod:`appserver.config`), the table of settings not supported (:mod:`.unsupported`), and the
deliberate differences below.  A difference is written here once, where it is decided, and
tests/gunicorn_compat holds each one to the truth beside gunicorn 27.
"""

from __future__ import annotations

from ..config import SETTING_NAMES, ServerConfig, gunicorn_name, hook_arities
from .unsupported import COMMAND_OPTIONS, UNSUPPORTED

_HOOK_SURVIVES = ("an exception is logged with its traceback and the master carries on "
                  "(gunicorn 27's master dies of it)")

# Our setting's name -> how it differs from gunicorn 27's, deliberately.
DIFFERENCES: dict[str, str] = {
    "workers": "default: 2 x usable cores + 1, a container's CPU quota counted (gunicorn: 1); "
               "`$WEB_CONCURRENCY` as in gunicorn",
    "keep_alive": "default 5 s (gunicorn: 2 s), above nginx's upstream keep-alive, so that "
                  "nginx closes idle connections first",
    "access_log_format": "default: the combined format (gunicorn: the common format)",
    "limit_request_line": "0 means our hard ceiling (64 KiB), not unlimited",
    "limit_request_fields": "0 means our hard ceiling (32,768), not unlimited",
    "limit_request_field_size": "0 means our hard ceiling (64 KiB), not unlimited",
    "forwarded_allow_ips": "the trusted X-Forwarded-For entry (see `forwarded_hops`) becomes "
                           "REMOTE_ADDR; gunicorn never changes REMOTE_ADDR",
    "proxy_protocol": "a v2 LOCAL header (a proxy's health check) and a v2 header for a "
                      "transport other than TCP keep the real peer (gunicorn: unset, 500); "
                      "refused for a `tornado.web.Application` and under `-k aiohttp`",
    "statsd_host": "the `gunicorn.workers` gauge is sent when the number changes (gunicorn: "
                   "on every turn of its loop)",
    "control_socket": "the default file is `appserver.ctl` ($XDG_RUNTIME_DIR, else "
                      "~/.appserver/); one held by another running master is left to it; "
                      "`appserver status` and `appserver control ACTION` talk to it (gunicornc's "
                      "command language is not spoken)",
    "initgroups": "the workers' primary group is `group` too (gunicorn 27 keeps the master's)",
    "proc_name": "titles read `appserver: master [NAME]`; nothing is retitled without a name "
                 "(setproctitle hides /proc/PID/environ)",
    "worker_class": "gunicorn's names of our classes are accepted; `asgi` and uvicorn's "
                    "worker classes mean the asyncio class with `interface = \"asgi\"`; "
                    "aiohttp's `aiohttp.GunicornWebWorker` (and its uvloop variant) mean "
                    "`aiohttp`",
    "asgi_lifespan": "auto: an app that raises on the lifespan scope does not support it "
                     "(as uvicorn); a startup failure stops the server, never a respawn loop",
    "asgi_disconnect_grace_period": "counted only while the response is incomplete: once "
                                    "it is complete the app (its background tasks) runs on "
                                    "(gunicorn cancels it too)",
    "root_path": "also the WSGI SCRIPT_NAME; the ASGI path carries the root path (prefixed "
                 "when the request's path lacks it, as uvicorn does)",
    "asyncio_loop": "gunicorn's asgi_loop: the loop of the asyncio and tornado classes, for WSGI "
                    "and ASGI apps alike",
    "pre_fork": _HOOK_SURVIVES,
    "child_exit": _HOOK_SURVIVES,
    "nworkers_changed": _HOOK_SURVIVES,
    "on_reload": _HOOK_SURVIVES,
    "certfile": "the context is built in the master at start-up: a bad file, a key that is not "
                "the certificate's, a passphrase-protected key or a bad cipher list stops the "
                "start naming the setting and file (gunicorn only checks the files exist)",
    "do_handshake_on_connect": "accepted, no effect: every class completes the handshake right "
                               "after the accept, within `--header-timeout`",
    "ssl_context": "called in the master at start-up and HUP (a check), then once per worker "
                   "(gunicorn's sync and gthread: per connection)",
    "secure_scheme_headers": "X-Forwarded-Proto is read at the `forwarded_hops` entry, without "
                             "regard to case (gunicorn compares the whole value: `https, http` "
                             "is http); names in any case",
    "forwarder_headers": "a SCRIPT_NAME header the path does not start with leaves the path as "
                         "it is (gunicorn: 500)",
    "header_map": "`dangerous` never lets an untrusted peer set SCRIPT_NAME (gunicorn does)",
    "daemon": "the daemon's umask is `--umask` (gunicorn's daemon: 022); WINCH retires the "
              "workers only while a new master (USR2) runs (gunicorn's daemon: on any WINCH)",
    "spew": "the workers are traced, every thread; the master is not (gunicorn's is)",
    "tmp_upload_dir": "must be a writable directory (gunicorn takes any string); unused, as "
                      "gunicorn 27 does not use it either",
    "logconfig": "`%(here)s` is the file's absolute directory (gunicorn: as the path spells it, "
                 "empty for a relative name); an error names the file, section and cause",
    "logconfig_dict": "an error names the handler, logger or formatter and its cause (gunicorn: "
                      "`Unable to configure root logger`)",
    "logconfig_json": "a file that does not exist stops the start (gunicorn ignores it)",
    "syslog_addr": "checked when the settings load (gunicorn: when its logger starts)",
    "syslog_facility": "checked when the settings load (gunicorn: when its logger starts)",
    "syslog_prefix": "default: the app (`myapp.app`) also when `wsgi_app` is set in a config "
                     "file (gunicorn then uses `gunicorn`)",
    "logger_class": "`access()` gets the hook views rebuilt from the environ (a repeated request "
                    "header is one joined entry); a subclass of gunicorn's StatsD logger turns "
                    "the server's own StatsD client off",
}


def gunicorn_names() -> dict[str, str | None]:
    """Every gunicorn 27 setting name -> ours (None: not a setting here)."""
    names: dict[str, str | None] = {}
    for name in SETTING_NAMES:
        theirs = gunicorn_name(name)
        if theirs:
            names[theirs] = name
    for name in (*UNSUPPORTED, *COMMAND_OPTIONS):
        names.setdefault(name, None)
    return names


def _status(theirs: str, ours: str | None) -> tuple[str, str]:
    if theirs in COMMAND_OPTIONS:
        return "an option of the command", f"`appserver serve {COMMAND_OPTIONS[theirs]}`"
    if ours is None:
        entry = UNSUPPORTED[theirs]
        return "refused", entry.why + "."
    notes = []
    if ours != theirs:
        notes.append(f"ours is `{ours}`")
    if ours in DIFFERENCES:
        notes.append(DIFFERENCES[ours])
    status = "supported, differs" if ours in DIFFERENCES else "supported"
    return status, "; ".join(notes)


def gunicorn_table() -> str:
    """The Markdown table of every gunicorn 27 setting and hook, alphabetical."""
    lines = ["| gunicorn 27 | kind | here | notes |", "|---|---|---|---|"]
    for theirs, ours in sorted(gunicorn_names().items()):
        kind = "hook" if (ours and hook_arities(ours)) or theirs in _UNSUPPORTED_HOOKS else \
            "setting"
        status, notes = _status(theirs, ours)
        lines.append(f"| `{theirs}` | {kind} | {status} | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# gunicorn's hooks that we refuse (their rows say why).
_UNSUPPORTED_HOOKS = {"on_dirty_starting", "dirty_post_fork", "dirty_worker_init",
                      "dirty_worker_exit"}


def check_differences() -> list[str]:
    """Names in DIFFERENCES that are not our settings (a typo would hide a difference)."""
    return [name for name in DIFFERENCES if name not in ServerConfig.model_fields]
