"""A raw HTTP/1.1 client for the behaviour suite: exact bytes out, parsed responses in.

Responses are parsed with httptools' response parser, so chunked bodies are decoded and several
responses on one connection (keep-alive, pipelining) are told apart.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    header_list: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Collector:
    def __init__(self) -> None:
        self.done: list[Response] = []
        self.current: Response | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Response(0, {})

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        key, text = name.decode("latin-1"), value.decode("latin-1")
        self.current.header_list.append((key, text))
        self.current.headers[key.lower()] = text

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        assert self.current is not None
        self.current.body += data

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.done.append(self.current)
        self.current = None


class Client:
    """One connection to the server under test."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        if address.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(address[5:])
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._collector = _Collector()
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str = "GET", path: str = "/hello", body: bytes = b"",
                headers: dict[str, str] | None = None, version: str = "1.1") -> None:
        lines = [f"{method} {path} HTTP/{version}", "Host: test"]
        all_headers = dict(headers or {})
        if body and "Transfer-Encoding" not in all_headers:
            all_headers.setdefault("Content-Length", str(len(body)))
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def response(self, timeout: float = 10.0) -> Response:
        """The next complete response (raises TimeoutError, or EOFError if the server closed)."""
        deadline = time.monotonic() + timeout
        while not self._collector.done:
            if self.eof:
                raise EOFError("connection closed before a complete response")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no complete response in time") from None
            if not data:
                self.eof = True
                try:
                    self._collector.parser.feed_data(b"")
                except httptools.HttpParserError:
                    pass
                continue
            self._collector.parser.feed_data(data)
        return self._collector.done.pop(0)

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (reads until EOF within timeout)."""
        if self.eof:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                self.eof = True
                return True
        return False

    def raw_until_close(self, timeout: float = 5.0) -> bytes:
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(address: str, data: bytes, timeout: float = 10.0) -> Response:
    with Client(address, timeout) as client:
        client.send(data)
        return client.response(timeout)


def environ_seen(host: str, port: int, *, source: str, headers: dict[str, str] | None = None,
                 path: str = "/environ") -> dict[str, str]:
    """GET ``path`` (an app that answers its environ as JSON) from the local address
    ``source`` (any of 127.0.0.0/8 is this machine); the environ the app saw."""
    import http.client
    import json

    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200, body
    environ = json.loads(body)
    assert isinstance(environ, dict)
    return environ
