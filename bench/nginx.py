"""The nginx in front of every server: render its config, check it, run it, read its logs.

One nginx runs for the whole benchmark, as a plain child process (``daemon off``, its pid file,
logs and temp files all under the run's temp dir; never the system service).  Its upstream
points at one fixed unix socket path that each server under test binds in turn, so every server
sits behind byte-for-byte the same proxy.  A second listener speaks the uwsgi protocol to the
same socket (``uwsgi_pass``, for uWSGI, the one peer with a protocol of its own); its buffers and
forwarded headers mirror the HTTP location's.  nginx cannot keep uwsgi connections alive, so
that upstream has no ``keepalive``: one connection per request, as uWSGI is deployed.

Failure accounting relies on two logs, read by byte offset so each measurement sees only its
own lines:

* an access log that records only responses whose status is not 2xx (so logging costs nothing
  on the fast path), with ``$upstream_status`` to tell a 502 nginx made up from one the app sent;
* the error log at level ``error``, whose lines mentioning ``upstream`` are the proxy-side
  failures: refused or reset connections, premature closes, timeouts.  nginx silently retries a
  GET on the next attempt when a kept-alive upstream connection turns out dead, but still logs
  it, so these lines reveal keep-alive races that the client never saw.
"""

from __future__ import annotations

import collections
import grp
import os
import pwd
import re
import socket
import string
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import ManagedProcess, wait_until

NGINX = "/usr/sbin/nginx"
# The upstream's idle timeout must stay below the server's keep-alive (75 s by default), so that
# nginx, not the server, closes idle connections: a server-side close can cross a request
# nginx is already sending, and nginx cannot retry a POST (design brief, "Zero 502s").
UPSTREAM_KEEPALIVE_TIMEOUT = 60
# The location that proxies WebSocket upgrades (bench/ws.py); ordinary requests go to "/".
WS_PATH = "/ws"


class _Template(string.Template):
    delimiter = "@"  # nginx uses $ for its own variables


_CONFIG = _Template("""\
# Rendered by bench/nginx.py for one benchmark run; not the deployment bundle's config.
daemon off;
master_process on;
worker_processes 1;
pid @{dir}/nginx.pid;
error_log @{dir}/error.log error;
@{user_line}
events {
    worker_connections 4096;
}

http {
    client_body_temp_path @{dir}/tmp/client_body;
    proxy_temp_path @{dir}/tmp/proxy;
    fastcgi_temp_path @{dir}/tmp/fastcgi;
    uwsgi_temp_path @{dir}/tmp/uwsgi;
    scgi_temp_path @{dir}/tmp/scgi;

    # Log failures only: one line per non-2xx response, with what the upstream answered.
    map $status $bench_failed {
        ~^2     0;
        default 1;
    }
    log_format bench '$msec $status "$upstream_status" $request_method $request_uri';
    access_log @{dir}/failed.log bench if=$bench_failed;

    # wrk keeps its connections; let it, so client-side reconnects do not add noise.
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream app {
        server unix:@{socket};
        keepalive 32;
        keepalive_timeout @{upstream_keepalive_timeout}s;
    }

    server {
        listen 127.0.0.1:@{port} backlog=4096;

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Buffering stays on (it shields sync workers from slow clients), with room for a
            # whole 1 MiB response in memory: spilling to a temp file would measure the disk.
            proxy_buffering on;
            proxy_buffer_size 16k;
            proxy_buffers 64 16k;
            proxy_busy_buffers_size 64k;
            proxy_read_timeout 60s;
        }

        # WebSocket echo (bench/ws.py): the upgrade is passed on, the connection is not reused
        # for other requests, and nothing is buffered, as in the bundle's WebSocket locations.
        location @{ws_path} {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }

    # The uwsgi protocol (uWSGI's --uwsgi-socket) to the same socket path.
    upstream app_uwsgi {
        server unix:@{socket};
    }

    server {
        listen 127.0.0.1:@{uwsgi_port} backlog=4096;

        location / {
            uwsgi_pass app_uwsgi;
            # The CGI variables nginx's stock uwsgi_params file sets, written out so that the
            # config does not depend on where the distribution put that file.
            uwsgi_param QUERY_STRING $query_string;
            uwsgi_param REQUEST_METHOD $request_method;
            uwsgi_param CONTENT_TYPE $content_type;
            uwsgi_param CONTENT_LENGTH $content_length;
            uwsgi_param REQUEST_URI $request_uri;
            uwsgi_param PATH_INFO $document_uri;
            uwsgi_param DOCUMENT_ROOT $document_root;
            uwsgi_param SERVER_PROTOCOL $server_protocol;
            uwsgi_param REQUEST_SCHEME $scheme;
            uwsgi_param HTTPS $https if_not_empty;
            uwsgi_param REMOTE_ADDR $remote_addr;
            uwsgi_param REMOTE_PORT $remote_port;
            uwsgi_param SERVER_PORT $server_port;
            uwsgi_param SERVER_NAME $server_name;
            # What the HTTP location adds with proxy_set_header (Host arrives as HTTP_HOST).
            uwsgi_param HTTP_X_FORWARDED_FOR $proxy_add_x_forwarded_for;
            uwsgi_param HTTP_X_FORWARDED_PROTO $scheme;
            uwsgi_buffering on;
            uwsgi_buffer_size 16k;
            uwsgi_buffers 64 16k;
            uwsgi_busy_buffers_size 64k;
            uwsgi_read_timeout 60s;
        }
    }
}
""")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (nginx binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_config(run_dir: Path, *, port: int, app_socket: Path, uwsgi_port: int) -> str:
    # A root master would start its workers as "nobody", who cannot enter the private temp dir
    # or write the socket.  Socket permissions are the deployment bundle's concern, not this
    # benchmark's, so the workers run as whoever runs the benchmark.
    user_line = ""
    if os.geteuid() == 0:
        user_line = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                     f"{grp.getgrgid(os.getegid()).gr_name};")
    return _CONFIG.substitute(dir=run_dir, user_line=user_line, port=port, socket=app_socket,
                              upstream_keepalive_timeout=UPSTREAM_KEEPALIVE_TIMEOUT,
                              ws_path=WS_PATH, uwsgi_port=uwsgi_port)


def nginx_version() -> str:
    result = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
    return result.stderr.strip().removeprefix("nginx version: ")


# ---------------------------------------------------------------------------------------------
# Counting failures in a window of the logs.

# "... while connecting to upstream", "upstream prematurely closed connection", "upstream timed
# out", "no live upstreams": every proxy-side failure names the upstream.
_UPSTREAM_ERROR = re.compile(r"\[(error|crit|alert|emerg)\].*upstream")
# The part of an error line that identifies its kind: drop the timestamp and PIDs before it and
# the per-request details (client, request, upstream address) after it.
_ERROR_KIND = re.compile(r"\[\w+\] \d+#\d+: (?:\*\d+ )?(.*?)(?:, client: .*)?$")


@dataclass
class LogWindow:
    """Failure counts from the nginx logs between two marks."""

    non_2xx: int = 0               # responses nginx gave wrk with a status outside 2xx
    bad_gateway: int = 0           # 502 and 504: the proxy's own failures
    client_closed: int = 0         # 499: wrk hung up on requests in flight when its time ran out
    upstream_errors: int = 0       # error-log lines about the upstream (including retried ones)
    statuses: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class LogMark:
    access: int
    error: int


class Nginx:
    """A running nginx, rendered for one run directory."""

    def __init__(self, run_dir: Path, app_socket: Path) -> None:
        self.run_dir = run_dir
        self.app_socket = app_socket
        self.conf_path = run_dir / "nginx.conf"
        self.access_log = run_dir / "failed.log"
        self.error_log = run_dir / "error.log"
        self.port = 0
        self.uwsgi_port = 0  # the listener that speaks the uwsgi protocol upstream
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, protocol: str) -> str:
        """The listener that reaches the socket over ``protocol`` ("http" or "uwsgi")."""
        if protocol == "uwsgi":
            return f"http://127.0.0.1:{self.uwsgi_port}"
        if protocol != "http":
            raise ValueError(f"unknown upstream protocol {protocol!r}; known: http, uwsgi")
        return self.url

    def start(self, attempts: int = 3) -> None:
        """Render, check with ``nginx -t``, start, and wait until the port answers.

        The port is chosen free and bound a moment later by nginx; if something else takes it
        in between, try another.
        """
        (self.run_dir / "tmp").mkdir(exist_ok=True)
        output = self.run_dir / "nginx.out"
        for _ in range(attempts):
            self.port = free_loopback_port()
            self.uwsgi_port = free_loopback_port()
            while self.uwsgi_port == self.port:
                self.uwsgi_port = free_loopback_port()
            self.conf_path.write_text(render_config(self.run_dir, port=self.port,
                                                    app_socket=self.app_socket,
                                                    uwsgi_port=self.uwsgi_port))
            self._check()
            proc = ManagedProcess("nginx", self._argv(), log_path=output)
            if self._wait_listening(proc):
                self.proc = proc
                return
            proc.stop(timeout=5.0)
        tail = "\n".join(_read_from(self.error_log, 0)[-10:] + _read_from(output, 0)[-10:])
        raise RuntimeError(f"nginx did not start; its last words:\n{tail}")

    def _wait_listening(self, proc: ManagedProcess) -> bool:
        ports = (self.port, self.uwsgi_port)
        wait_until(lambda: not proc.alive() or all(map(_port_open, ports)), timeout=10.0)
        return proc.alive() and all(map(_port_open, ports))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10.0)  # SIGTERM: nginx's fast shutdown
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def mark(self) -> LogMark:
        return LogMark(_size(self.access_log), _size(self.error_log))

    def window(self, start: LogMark) -> LogWindow:
        """Count failures logged since ``start``."""
        result = LogWindow()
        statuses: collections.Counter[str] = collections.Counter()
        for line in _read_from(self.access_log, start.access):
            parts = line.split()
            if len(parts) < 2:
                continue
            statuses[parts[1]] += 1
        result.statuses = dict(statuses)
        result.client_closed = statuses.get("499", 0)
        result.non_2xx = sum(statuses.values()) - result.client_closed
        result.bad_gateway = statuses.get("502", 0) + statuses.get("504", 0)
        kinds: collections.Counter[str] = collections.Counter()
        for line in _read_from(self.error_log, start.error):
            if _UPSTREAM_ERROR.search(line):
                match = _ERROR_KIND.search(line)
                kinds[match.group(1) if match else line] += 1
        result.upstream_errors = sum(kinds.values())
        result.error_kinds = dict(kinds.most_common(10))
        return result

    def _argv(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.run_dir), "-c", str(self.conf_path),
                "-e", str(self.error_log), *extra]

    def _check(self) -> None:
        result = subprocess.run(self._argv("-t", "-q"), capture_output=True, text=True,
                                timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t rejected {self.conf_path}:\n{result.stderr}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
