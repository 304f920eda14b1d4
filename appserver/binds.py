"""Listening addresses as the settings spell them: ``HOST:PORT``, ``[::1]:PORT``, ``unix:PATH``,
``fd://N`` (parsing only; binding is appserver.sockets)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BindAddress:
    """One listening address: ``kind`` is "tcp", "unix" or "fd"."""

    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_bind(text: str) -> BindAddress:
    """Parse ``HOST:PORT``, ``[::1]:PORT``, ``HOST`` (port 8000), ``unix:PATH`` or ``fd://N``."""
    if text.startswith("unix:"):
        path = text[5:].removeprefix("//")
        if not path:
            raise ValueError(f"{text!r}: unix: needs a path, e.g. unix:/run/app/app.sock")
        return BindAddress("unix", path=path)
    if text.startswith("fd://"):
        if not text[5:].isdigit():
            raise ValueError(f"{text!r}: fd:// needs a file descriptor number, e.g. fd://3")
        return BindAddress("fd", fd=int(text[5:]))
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]*)(?::(\d+))?", text)
    if not match:
        raise ValueError(f"{text!r} is not HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N")
    host = match.group(1) or match.group(3) or "0.0.0.0"
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else 8000
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is outside 0-65535")
    return BindAddress("tcp", host=host, port=port)


def parse_statsd_address(text: str) -> tuple[int, str | tuple[str, int]]:
    """A StatsD server as gunicorn's ``statsd_host`` spells it: ``HOST:PORT``, ``[v6]:PORT`` or
    ``unix://PATH`` -> (address family, address for a datagram socket)."""
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path:
            raise ValueError(f"{text!r}: unix:// needs a path")
        return socket.AF_UNIX, path
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT or unix://PATH")
    host = host.strip("[]") or "localhost"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def parse_syslog_address(text: str) -> tuple[int | None, str | tuple[str, int]]:
    """A syslog server as gunicorn's ``syslog_addr`` spells it -> (socket type, address) for
    ``logging.handlers.SysLogHandler``.

    ``udp://HOST:PORT`` and ``tcp://HOST:PORT`` (``[v6]:PORT``; the host defaults to localhost
    and the port to 514); ``unix://PATH`` with an optional ``#dgram`` or ``#stream``.  As in
    gunicorn, only ``#dgram`` pins the socket type of a unix path: otherwise (None) the handler
    tries a datagram socket, then a stream one, which reaches a stream socket all the same."""
    if text.startswith("unix://"):
        path, _, kind = text[len("unix://"):].partition("#")
        if not path:
            raise ValueError(f"{text!r}: unix:// needs a path")
        if kind not in ("", "dgram", "stream"):
            raise ValueError(f"{text!r}: the socket type after '#' is dgram or stream")
        return (socket.SOCK_DGRAM if kind == "dgram" else None), path
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("udp", "tcp"):
        raise ValueError(f"{text!r} is not udp://HOST:PORT, tcp://HOST:PORT or "
                         f"unix://PATH[#dgram|#stream]")
    socktype = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    match = re.fullmatch(r"\[([^\]]*)\](?::(.*))?|([^:]*)(?::(.*))?", rest)
    assert match is not None  # the second branch matches any text without a second colon
    if match.group(1) is None and ":" in (match.group(4) or ""):
        raise ValueError(f"{text!r}: write an IPv6 host in brackets, [::1]:514")
    host = (match.group(1) if match.group(1) is not None else match.group(3)) or "localhost"
    port = match.group(2) if match.group(1) is not None else match.group(4)
    if port is None or port == "":
        return socktype, (host.lower(), 514)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: {port!r} is not a port number")
    return socktype, (host.lower(), int(port))
