"""Checks across layers: settings that are each valid but together would fail at run time.

Each check returns lines naming the file, the keys involved, their values and a fix.  They run on
the :class:`~appserver.bundle.plan.Plan` of each target, i.e. on the effective server settings:
values the bundle derives always pass, so a failure always points at something set explicitly.

:func:`cross_check` finds errors (the render fails); :func:`cross_check_warnings` finds settings
that work only if the app does something the bundle cannot see (printed, the render goes on).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from appserver.bundle.crosscheck_kubernetes import kubernetes_problems, kubernetes_warnings
from appserver.bundle.crosscheck_systemd import systemd_problems
from appserver.bundle.loading import Loaded
from appserver.bundle.plan import (
    APP_USER,
    DOCKER_GROUPS,
    HEALTH_PORT,
    KEEPALIVE_MARGIN,
    NGINX_USER,
    Plan,
)
from appserver.bundle.values import format_size

# Seconds compose must wait past graceful_timeout: the master needs a moment after its last
# worker exits (closing the socket, removing it), and SIGKILL at the same instant loses that.
STOP_MARGIN_MIN = 2
# Seconds nginx's WebSocket read timeout must leave past the ping interval: the server pings a
# WebSocket once the client has been silent for a whole interval, from a timer that ticks about
# once a second in the worker's main thread, and the ping then crosses nginx.  With equal values
# nginx would give up at the very moment the ping is due.
PING_MARGIN = 5
# Worker classes that serve one request at a time: the server answers a WebSocket upgrade with 501.
ONE_REQUEST_AT_A_TIME = frozenset({"sync"})


def cross_check(loaded: Loaded, plans: list[Plan]) -> list[str]:
    """Every disagreement between the layers, for the given targets' plans."""
    problems: list[str] = []
    seen: set[str] = set()
    for plan in plans:
        for line in _timeouts(loaded, plan) + _limits(loaded, plan) + _keepalive(loaded, plan) \
                + _socket(loaded, plan) + _ports(loaded, plan) + _websockets(loaded, plan) \
                + _forwarding(loaded, plan) + _metrics_private(loaded, plan) \
                + kubernetes_problems(loaded, plan):
            if line not in seen:  # most checks read the same values in both targets
                seen.add(line)
                problems.append(line)
    # The systemd units (deploy/systemd/): their own plan, checked once.
    problems += [line for line in systemd_problems(loaded) if line not in seen]
    return problems


def cross_check_warnings(loaded: Loaded, plans: list[Plan]) -> list[str]:
    """Settings that work only if the app does its part; each line starts with "warning: "."""
    lines: list[str] = []
    for plan in plans:
        for line in _websocket_pings_off(loaded, plan) + _asgi_threads(loaded, plan) \
                + _rooms_without_redis(loaded, plan) + kubernetes_warnings(loaded, plan):
            if line not in lines:
                lines.append(line)
    return lines


def _timeouts(loaded: Loaded, plan: Plan) -> list[str]:
    f, n, server = loaded.path, loaded.settings.nginx, plan.server
    out = []
    if server.timeout and n.proxy_read_timeout < server.timeout:
        out.append(
            f"{f}: nginx.proxy_read_timeout = {n.proxy_read_timeout} is below server.timeout = "
            f"{server.timeout}: nginx would answer 504 while a worker is still allowed to work "
            f"on the request; raise nginx.proxy_read_timeout to at least {server.timeout} or "
            f"lower server.timeout")
    if plan.docker is not None:
        stop = plan.docker.stop_grace_period
        if stop < server.graceful_timeout + STOP_MARGIN_MIN:
            out.append(
                f"{f}: compose.stop_grace_period = {stop} leaves no time for server."
                f"graceful_timeout = {server.graceful_timeout}: `docker compose down` would "
                f"SIGKILL the server while requests are still finishing; set "
                f"compose.stop_grace_period to at least {server.graceful_timeout + STOP_MARGIN_MIN} "
                f"(or leave it unset: graceful_timeout + 5) or lower server.graceful_timeout")
    return out


def _limits(loaded: Loaded, plan: Plan) -> list[str]:
    """nginx must reject first: whatever nginx lets through, the server must accept."""
    f, n, server = loaded.path, loaded.settings.nginx, plan.server
    out = []
    size = n.header_buffer_size
    shown = f"nginx.header_buffer_size = {format_size(size)!r} ({size} bytes)"
    # nginx accepts a request line or header field that fits in one large header buffer, and
    # re-sends header fields as "name: value" (RFC 9112 §5), so a forwarded line is at most
    # the buffer's size; the server's limits count a line without its CRLF.
    for key, effective, status in (("limit_request_line", server.max_request_line, 414),
                                   ("limit_request_field_size", server.max_field_size, 431)):
        if effective < size:
            out.append(
                f"{f}: server.{key} = {getattr(server, key)} is below {shown}: nginx would pass "
                f"lines the server rejects with {status}; remove server.{key} (it is derived "
                f"from nginx.header_buffer_size) or set it to at least {size}")
    body = n.client_max_body_size
    server_body = server.limit_request_body
    if server_body and (body == 0 or server_body < body):
        nginx_says = "no limit" if body == 0 else f"{format_size(body)!r} ({body} bytes)"
        out.append(
            f"{f}: server.limit_request_body = {server_body} is below nginx.client_max_body_size "
            f"= {nginx_says}: nginx would pass bodies the server rejects with 413; remove server."
            f"limit_request_body (it is derived from nginx.client_max_body_size) or set it to 0 "
            f"or at least {body}")
    return out


def _keepalive(loaded: Loaded, plan: Plan) -> list[str]:
    f, n, server = loaded.path, loaded.settings.nginx, plan.server
    if not n.upstream_keepalive or server.keep_alive > n.upstream_keepalive_timeout:
        return []
    return [
        f"{f}: server.keep_alive = {server.keep_alive} must exceed nginx."
        f"upstream_keepalive_timeout = {n.upstream_keepalive_timeout}: otherwise the server may "
        f"close an idle connection just as nginx reuses it (a 502); remove server.keep_alive (it "
        f"is derived: timeout + {KEEPALIVE_MARGIN}), raise it above "
        f"{n.upstream_keepalive_timeout}, or set nginx.upstream_keepalive = 0"]


def socket_writable(mode: int, owner_uid: int, gid: int, nginx_uid: int,
                    nginx_gids: frozenset[int]) -> bool:
    """Whether nginx's worker may connect(2) to the socket: that needs write permission."""
    if nginx_uid == 0:
        return True
    if nginx_uid == owner_uid:
        return bool(mode & 0o200)
    if gid in nginx_gids:
        return bool(mode & 0o020)
    return bool(mode & 0o002)


def _socket(loaded: Loaded, plan: Plan) -> list[str]:
    f, server = loaded.path, plan.server
    mode = f'"{server.socket_mode:04o}"'
    if plan.socket_gid is None:
        known = ", ".join(f"{name} ({gid})" for name, gid in DOCKER_GROUPS.items())
        return [f"{f}: server.socket_group = {server.socket_group!r}: no such group in the app "
                f"image (known: {known}, or a numeric id); use \"{NGINX_USER}\", the group of "
                f"nginx's workers"]
    if socket_writable(server.socket_mode, plan.socket_owner_uid, plan.socket_gid,
                       plan.nginx_uid, plan.nginx_gids):
        return []
    if plan.target == "docker":
        who = (f"nginx's workers (user {NGINX_USER}, uid {plan.nginx_uid}) cannot write to the "
               f"socket, owned by {APP_USER} (uid {plan.socket_owner_uid}) with group id "
               f"{plan.socket_gid}")
        fix = f'use socket_mode = "0660" with socket_group = "{NGINX_USER}"'
    else:
        who = (f"locally nginx's workers run as uid {plan.nginx_uid}, the socket's owner, and "
               f"the mode has no owner write bit")
        fix = 'use socket_mode = "0660" or "0600"'
    return [f"{f}: server.socket_mode = {mode} ({plan.target}): {who}, so every request would "
            f"get a 502; {fix}"]


def _ports(loaded: Loaded, plan: Plan) -> list[str]:
    """Ports one network namespace would bind twice: nginx's container (with the exporter that
    shares it) in Docker; this machine's loopback in the local stack."""
    f, n = loaded.path, loaded.settings.nginx
    m = loaded.settings.metrics
    if plan.target == "docker":
        used = {"nginx.listen_port": n.listen_port}
        if n.tls.enabled:
            used["nginx.tls.listen_port"] = n.tls.listen_port
    else:  # the ports nginx really listens on (`appserver up --port` overrides the settings)
        used = {"compose.published_port": int(plan.http_listens[0].rpartition(":")[2])}
        if n.tls.enabled:
            used["compose.published_tls_port"] = int(plan.https_listens[0].rpartition(":")[2])
    if plan.health_listen:
        used["the health check server"] = HEALTH_PORT
    if plan.metrics is not None:
        if plan.target == "local":  # in Docker the server's listener is in the app container
            used["metrics.bind"] = plan.metrics.server_port
        if plan.metrics.nginx_status_listen:
            used["metrics.nginx_status_port"] = m.nginx_status_port
            used["metrics.nginx_exporter_port"] = m.nginx_exporter_port
    out = []
    names = list(used)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if used[a] == used[b]:
                out.append(f"{f}: {a} = {used[a]} collides with {b} (port {used[b]}); choose "
                           f"another port")
    return out


def _metrics_private(loaded: Loaded, plan: Plan) -> list[str]:
    """The server's metrics, nginx's stub_status and the exporter stay inside the deployment: no
    location of the public server block may proxy to any of their addresses."""
    if plan.metrics is None:
        return []
    out = []
    for address in plan.metrics.private_addresses:
        for upstream in plan.public_upstreams:
            if upstream.removeprefix("http://").rstrip("/") == address:
                out.append(
                    f"{loaded.path}: metrics.bind = {loaded.settings.metrics.bind!r} "
                    f"({plan.target}): the public server block proxies to {upstream}, a "
                    f"monitoring listener, so its numbers (and /metrics) would be public; keep "
                    f"the app's upstream on the unix socket and the monitoring listeners on "
                    f"ports of their own")
    return out


def _forwarding(loaded: Loaded, plan: Plan) -> list[str]:
    """nginx replaces X-Forwarded-For with the one address it believes, so the server behind it
    must believe exactly one hop: with more, it would find too few entries and ignore them."""
    hops = plan.server.forwarded_hops
    if hops == 1:
        return []
    return [f"{loaded.path}: server.forwarded_hops = {hops}, but nginx sends the server one "
            f"X-Forwarded-For entry (the client it believes), which the server would then "
            f"ignore; remove server.forwarded_hops and count the proxies in front of nginx with "
            f"nginx.trusted_proxy_hops"]


def _seconds(value: float) -> str:
    return f"{value:g}"


def _websockets(loaded: Loaded, plan: Plan) -> list[str]:
    """WebSocket locations need a worker that can hold them, and pings that outpace nginx."""
    f, n, server = loaded.path, loaded.settings.nginx, plan.server
    if not n.websocket_locations:
        return []
    where = f"nginx.websocket_locations = {n.websocket_locations}"
    kind = server.effective_worker_class
    out = []
    if kind in ONE_REQUEST_AT_A_TIME:
        out.append(
            f"{f}: {where} needs a worker class that holds connections open, but server."
            f'worker_class = "{kind}" serves one request at a time and answers every WebSocket '
            f'upgrade with 501; set server.worker_class = "gthread" with server.threads above '
            f"server.websocket_max_connections (e.g. threads = 32, websocket_max_connections = "
            f"24), or remove nginx.websocket_locations")
    elif kind == "gthread" and server.websocket_max_connections >= server.threads:
        # Each open WebSocket keeps one of the worker's threads for as long as it lives; with
        # every thread taken, nothing is left to serve a page, or even to refuse an upgrade (503).
        out.append(
            f"{f}: server.websocket_max_connections = {server.websocket_max_connections} is not "
            f"below server.threads = {server.threads}: each open WebSocket holds one of a gthread "
            f"worker's threads, so with {server.threads} open no thread is left for ordinary "
            f"requests (nginx answers 504); raise server.threads above "
            f"server.websocket_max_connections or lower websocket_max_connections below "
            f"server.threads, keeping threads free for pages")
    ping = server.websocket_ping_interval
    needed = math.ceil(ping + PING_MARGIN)
    if ping and n.websocket_read_timeout < needed:
        out.append(
            f"{f}: nginx.websocket_read_timeout = {n.websocket_read_timeout} does not exceed "
            f"server.websocket_ping_interval = {_seconds(ping)} by {PING_MARGIN}s: nginx would "
            f"close an idle WebSocket (the client sees 1006) before the server's ping keeps it "
            f"alive; raise nginx.websocket_read_timeout to at least {needed} or lower server."
            f"websocket_ping_interval")
    return out


def _websocket_pings_off(loaded: Loaded, plan: Plan) -> list[str]:
    """No pings and a finite nginx timeout: a warning, not an error, because an app may keep its
    WebSockets busy itself (Socket.IO/engineio send their own heartbeat every 25 s), which the
    bundle cannot see; for any other app idle WebSockets are cut after the timeout."""
    f, n, server = loaded.path, loaded.settings.nginx, plan.server
    if not n.websocket_locations or server.websocket_ping_interval:
        return []
    idle = server.websocket_idle_timeout
    if idle and idle < n.websocket_read_timeout:
        return []  # the server closes idle WebSockets itself (1000), before nginx cuts them
    return [
        f"warning: {f}: server.websocket_ping_interval = 0 (no pings) and nginx."
        f"websocket_read_timeout = {n.websocket_read_timeout}: nginx closes a WebSocket that "
        f"stays silent for {n.websocket_read_timeout}s (the client sees 1006); fine if the app "
        f"sends its own heartbeats more often, otherwise set server.websocket_ping_interval "
        f"(e.g. 20), or server.websocket_idle_timeout below {n.websocket_read_timeout} so the "
        f"server closes idle WebSockets cleanly first"]


def _rooms_without_redis(loaded: Loaded, plan: Plan) -> list[str]:
    """Several workers, WebSockets and no Redis: a warning, because only an app that keeps
    rooms (a chat) needs to reach every worker, which the bundle cannot see."""
    f, s = loaded.path, loaded.settings
    if s.redis.enabled or not s.nginx.websocket_locations or plan.server.workers == 1:
        return []
    workers = plan.server.workers or "the automatic count of"
    return [
        f"warning: {f}: redis.mode = \"off\" with {workers} workers and nginx."
        f"websocket_locations = {s.nginx.websocket_locations}: an in-process broadcast room "
        f"(appserver.broadcast without Redis) reaches the clients of one worker only; set "
        f"redis.mode = \"local\" (or \"url\") so rooms span every worker, or server.workers = 1"]


def _asgi_threads(loaded: Loaded, plan: Plan) -> list[str]:
    """``threads`` sizes the pool WSGI apps run in; an ASGI app runs each request as a task in
    the worker's event loop, so a value set for it (say, copied from a gthread setup that held
    one thread per WebSocket) buys nothing.  A warning: it does no harm either."""
    if plan.server.interface != "asgi" or "threads" not in loaded.explicit_server_keys:
        return []
    return [
        f"warning: {loaded.path}: server.threads = {plan.server.threads} does not apply to "
        f'app.interface = "asgi": each request and WebSocket is a task in the worker\'s event '
        f"loop, not a thread (an app's own sync code runs in its framework's thread pool); "
        f"remove server.threads"]


def check_files(loaded: Loaded) -> list[str]:
    """Files the settings point to (needed to build and run, not to render)."""
    f, s = loaded.path, loaded.settings
    base = loaded.directory
    out = []
    app_dir = base / s.app.directory
    if not app_dir.is_dir():
        out.append(f"{f}: app.directory = {s.app.directory!r}: no such directory ({app_dir})")
    else:
        top = s.app.module.split(":")[0].split(".")[0]
        if not ((app_dir / top).is_dir() or (app_dir / f"{top}.py").is_file()):
            out.append(f"{f}: app.module = {s.app.module!r}: no module {top!r} in app.directory "
                       f"({app_dir}); the server imports it from there")
    if s.nginx.static_dir and not (base / s.nginx.static_dir).is_dir():
        out.append(f"{f}: nginx.static_dir = {s.nginx.static_dir!r}: no such directory "
                   f"({base / s.nginx.static_dir})")
    if s.nginx.tls.enabled:
        for key in ("certificate", "certificate_key"):
            value = getattr(s.nginx.tls, key)
            path = Path(value) if os.path.isabs(value) else base / value
            if not path.is_file():
                out.append(f"{f}: nginx.tls.{key} = {value!r}: no such file ({path})")
    return out
