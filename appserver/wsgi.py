"""PEP 3333 glue, free of I/O: request head -> environ; start_response/body -> response bytes.

The connection code (``appserver.workers.pump``) gives us a ``pull`` callable that returns the
next piece of request body (b"" at its end) and a ``send`` callable that writes bytes; everything
about what goes into the environ and how the response is framed is decided here.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import unquote_to_bytes

from .forwarded import DEFAULT_FORWARDER_HEADERS, ForwardedTrust, SchemeConflict
from .http.events import ProtocolError, RequestHead
from .http.response import (
    HOP_BY_HOP,
    LAST_CHUNK,
    ResponseError,
    body_allowed,
    check_header,
    check_status,
    chunk,
    http_date,
    serialize_head,
)

if TYPE_CHECKING:
    from .hooks import RequestHooks

SERVER_SOFTWARE = "appserver/0.1"
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Return this from the app (or raise StopIteration) after taking over environ['gunicorn.socket']:
# the server then writes nothing and closes the connection.
ALREADY_HANDLED = object()

_environ_keys: dict[bytes, str | None] = {}
_SPECIAL = {b"CONTENT_TYPE": "CONTENT_TYPE", b"CONTENT_LENGTH": "CONTENT_LENGTH"}


def _environ_key(name: bytes) -> str | None:
    """``User-Agent`` -> ``HTTP_USER_AGENT``; None for names with "_" (dropped, as nginx does:
    otherwise ``X-Forwarded_For`` would be indistinguishable from ``X-Forwarded-For``)."""
    key = _environ_keys.get(name)
    if key is None and name not in _environ_keys:
        if b"_" in name:
            key = None
        else:
            upper = name.upper().replace(b"-", b"_")
            key = _SPECIAL.get(upper) or "HTTP_" + upper.decode("latin-1")
        if len(_environ_keys) < 2048:  # bounded: names come from clients
            _environ_keys[name] = key
    return key


class FileWrapper:
    """``wsgi.file_wrapper``: the pump sends these with sendfile when the file has a descriptor."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.blksize):
            yield data

    def regular_file_extent(self) -> tuple[int, int] | None:
        """(offset, bytes left) when the file is a regular file on disk, else None."""
        try:
            st = os.fstat(self.filelike.fileno())
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return offset, max(0, st.st_size - offset)


class InputStream:
    """``wsgi.input``: the request body, pulled from the connection as the app reads it."""

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._pull()
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(self._buffer):
                end = limit
                break
            start = len(self._buffer)
            if not self._fill():
                end = len(self._buffer)
                break
        if 0 <= limit < end:
            end = limit
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class WSGIContext:
    """What every request of one worker shares: the constant part of the environ, trust
    (``trusted_ips`` may send forwarded headers; ``forwarded_hops`` of their entries are
    believed; ``scheme_headers`` and ``forwarder_headers`` are gunicorn's settings of those
    names: see :mod:`appserver.forwarded`) and ``header_map`` (what becomes of header names
    with "_": drop, refuse with a 400, or "dangerous": map them like the others)."""

    def __init__(self, *, multithread: bool, multiprocess: bool, trusted_ips: list[str],
                 forwarded_hops: int = 1, errors: IO[str] | None = None,
                 scheme_headers: Mapping[str, str] | None = None,
                 forwarder_headers: Iterable[str] = DEFAULT_FORWARDER_HEADERS,
                 header_map: str = "drop", root_path: str = "") -> None:
        self.forwarded = ForwardedTrust(trusted_ips, forwarded_hops, scheme_headers,
                                        forwarder_headers)
        self.header_map = header_map
        # The environ keys build_environ looks at: X-Forwarded-For (""), the scheme headers.
        self.watched: dict[str, str] = {"HTTP_X_FORWARDED_FOR": "", **self.forwarded.scheme_keys}
        # pre_request/post_request (appserver.hooks); None, the usual case, costs one test.
        self.hooks: RequestHooks | None = None
        # The mount point: --root-path, else the SCRIPT_NAME environment variable (gunicorn's).
        self.script_name = root_path or os.environ.get("SCRIPT_NAME", "").rstrip("/")
        self.scheme = "http"  # "https" when the listeners speak TLS (appserver.tls)
        self.base: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.errors": errors or sys.stderr,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SCRIPT_NAME": self.script_name,
        }


def build_environ(ctx: WSGIContext, head: RequestHead, body: InputStream, *,
                  peer: tuple[str, int] | None, local: tuple[str, int] | None,
                  is_unix: bool) -> dict[str, Any]:
    """The PEP 3333 environ for one request."""
    environ = ctx.base.copy()
    target = head.target
    environ["RAW_URI"] = environ["REQUEST_URI"] = target.decode("latin-1")
    host = head.host
    absolute = target[:1] != b"/" and b"://" in target[:8]
    if absolute:
        # absolute-form: its authority replaces Host (RFC 9112 §3.2.2)
        rest = target.split(b"://", 1)[1].partition(b"#")[0]
        slash = rest.find(b"/")
        question = rest.find(b"?")
        cut = min(i for i in (slash, question, len(rest)) if i >= 0)
        host, target = rest[:cut], rest[cut:] or b"/"
        if target[:1] == b"?":
            target = b"/" + target
    target = target.partition(b"#")[0]  # a fragment is not part of a request (RFC 9112 §3.2)
    path, _, query = target.partition(b"?")
    path_info = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    environ["REQUEST_METHOD"] = head.method
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + head.version
    environ["wsgi.input"] = body

    watched = ctx.watched
    seen_for = False
    scheme_lines: list[tuple[str, str]] = []   # each line of a listed scheme header
    underscored: list[tuple[str, str]] | None = None
    for name, value in head.headers:
        key = _environ_key(name)
        if key is None:
            if underscored is None:
                underscored = []
            underscored.append((name.decode("latin-1").upper(), value.decode("latin-1")))
            continue
        text = value.decode("latin-1")
        if key in watched:
            listed = watched[key]
            if listed:
                scheme_lines.append((listed, text))
            else:
                seen_for = True
        if key in environ:
            text = environ[key] + "," + text
        environ[key] = text
    if absolute and host:  # the server MUST ignore the received Host (RFC 9112 §3.2.2)
        environ["HTTP_HOST"] = host.decode("latin-1")

    peer_ip, peer_port = (peer[0], str(peer[1])) if peer else ("", "0")
    scheme = ctx.scheme
    trust = ctx.forwarded
    trusted: bool | None = None
    script_name = ctx.script_name
    if underscored is not None:
        trusted = trust.allows(peer_ip, is_unix)
        script_name = _underscored(ctx, environ, underscored, trusted, scheme_lines, script_name)
        seen_for = "HTTP_X_FORWARDED_FOR" in environ
    if script_name and path_info.startswith(script_name) \
            and path_info[len(script_name):len(script_name) + 1] in ("", "/"):
        path_info = path_info[len(script_name):]
    environ["PATH_INFO"] = path_info
    if seen_for or scheme_lines:
        if trusted is None:
            trusted = trust.allows(peer_ip, is_unix)
        if trusted:
            if seen_for:
                # Only the entry at the believed hop counts; the client wrote everything to
                # its left.
                client = trust.client(environ["HTTP_X_FORWARDED_FOR"])
                if client is not None:
                    peer_ip, peer_port = client, "0"
            if scheme_lines:
                try:
                    proto = trust.scheme_of(scheme_lines)
                except SchemeConflict as exc:
                    raise ProtocolError(400, str(exc)) from None
                if proto is not None:
                    scheme = proto
    environ["REMOTE_ADDR"] = peer_ip
    environ["REMOTE_PORT"] = peer_port
    environ["wsgi.url_scheme"] = scheme

    default_port = "443" if scheme == "https" else "80"
    if host:
        text = host.decode("latin-1")
        if text.startswith("["):
            server_name, _, port = text.partition("]")
            server_name += "]"
            port = port.lstrip(":")
        else:
            server_name, _, port = text.partition(":")
        environ["SERVER_NAME"] = server_name
        environ["SERVER_PORT"] = port or default_port
    elif local is not None:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = local[0], str(local[1])
    else:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = "localhost", default_port
    return environ


def _underscored(ctx: WSGIContext, environ: dict[str, Any], headers: list[tuple[str, str]],
                 trusted: bool, scheme_lines: list[tuple[str, str]], script_name: str) -> str:
    """Header names with "_" (upper case, with their values): a trusted peer's forwarder
    headers are kept (``HTTP_<NAME>``; ``SCRIPT_NAME`` also sets the mount point, returned),
    the rest follow ``header_map``.  A listed scheme header counts from a trusted peer even
    when it is then dropped, as in gunicorn."""
    trust = ctx.forwarded
    for name, text in headers:
        if trusted and name in trust.scheme_headers:
            scheme_lines.append((name, text))
        if trusted and trust.forwards(name):
            if name == "SCRIPT_NAME":
                script_name = text.rstrip("/")
                environ["SCRIPT_NAME"] = script_name
        elif ctx.header_map == "refuse":
            raise ProtocolError(400, f"header name {name!r} contains '_' (--header-map refuse)")
        elif ctx.header_map != "dangerous":
            continue  # drop (nginx's underscores_in_headers off does the same)
        key = "HTTP_" + name.replace("-", "_")
        environ[key] = environ[key] + "," + text if key in environ else text
    return script_name


class Response:
    """start_response and response framing for one request (PEP 3333 §"The start_response()
    Callable", RFC 9112 §6).  ``send`` writes bytes to the client."""

    __slots__ = ("send", "method", "version", "want_keep_alive", "status", "status_code",
                 "headers", "headers_sent", "content_length", "chunked", "body_allowed",
                 "bytes_sent", "keep_alive", "before_head", "app_date")

    def __init__(self, send: Callable[[bytes], None], method: str, version: str,
                 keep_alive: bool) -> None:
        self.send = send
        self.method = method
        self.version = version
        self.want_keep_alive = keep_alive
        self.status: str | None = None
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.content_length: int | None = None
        self.chunked = False
        self.body_allowed = True
        self.bytes_sent = 0        # body bytes, excluding framing
        self.keep_alive = keep_alive
        self.app_date = False      # the app sent its own Date
        # Called just before the head is serialised: the connection may veto keep-alive then.
        self.before_head: Callable[[Response], None] | None = None

    def start_response(self, status: object, headers: object,
                       exc_info: ExcInfo | None = None) -> Callable[[bytes], None]:
        # (``object``: what an app passes is checked here, see check_status.)
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle
        elif self.status is not None:
            raise AssertionError("start_response called twice without exc_info")
        code = check_status(status)
        if type(headers) is not list:  # noqa: E721
            raise ResponseError(f"headers must be a list, got {type(headers).__name__}")
        return self.start(code, cast(str, status), headers)

    def start(self, code: int, status: str, headers: list[Any],
              checked: bool = False) -> Callable[[bytes], None]:
        """start_response after the status line was checked (the ASGI path has an int);
        ``checked``: the caller has made sure every header is a (name, value) tuple that
        :func:`check_header` accepts (the ASGI path checks the app's bytes)."""
        kept: list[tuple[str, str]] = []
        content_length = None
        keep_alive = self.want_keep_alive
        app_date = False
        for item in headers:
            if not checked:
                if type(item) is not tuple or len(item) != 2:  # noqa: E721
                    raise ResponseError(f"header {item!r} is not a (name, value) tuple")
                check_header(*item)
            name, value = item
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == "connection" and "close" in value.lower():
                    keep_alive = False
                continue
            if lname == "content-length":
                digits = value.strip()
                if not (digits.isascii() and digits.isdigit()):
                    raise ResponseError(f"invalid Content-Length {value!r}")
                if content_length is not None and int(digits) != content_length:
                    raise ResponseError(f"conflicting Content-Length values {content_length}, {digits}")
                if content_length is not None or code < 200 or code == 204:
                    continue  # a repeat, or a status that must not have one (RFC 9110 §8.6)
                content_length = int(digits)
            elif lname == "date":
                app_date = True
            kept.append((name, value))
        self.status, self.status_code, self.headers = status, code, kept
        self.content_length = content_length
        self.app_date = app_date
        self.keep_alive = keep_alive
        return self.write

    def head(self, body_length: int | None = None) -> bytes:
        """The response head; ``body_length`` is known when the whole body is at hand."""
        if self.status is None:
            raise ResponseError("the app returned without calling start_response")
        if self.before_head is not None:
            self.before_head(self)
        headers = self.headers
        self.body_allowed = body_allowed(self.status_code, self.method)
        if self.content_length is None and self.status_code >= 200 and self.status_code != 204 \
                and self.status_code != 304:
            if body_length is not None and (self.method != "HEAD" or body_length > 0):
                # (An app that returns its body for HEAD tells us the length a GET would have.)
                self.content_length = body_length
                headers.append(("Content-Length", str(body_length)))
            elif self.body_allowed:
                if self.version == "1.1":
                    self.chunked = True
                    headers.append(("Transfer-Encoding", "chunked"))
                else:
                    self.keep_alive = False  # close-delimited (RFC 9112 §6.3 item 8)
        if not self.app_date:
            # Date is a singleton field (RFC 9110 §6.6.1, §5.3): the app's own stands alone.
            headers.append(("Date", http_date()))
        if not self.keep_alive:
            headers.append(("Connection", "close"))
        elif self.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        self.headers_sent = True
        return serialize_head(self.version, self.status, headers)

    def frame(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire; never more than the declared Content-Length."""
        if not data or not self.body_allowed:
            return b""
        if self.content_length is not None:
            room = self.content_length - self.bytes_sent
            if len(data) > room:
                data = data[:room]
                self.keep_alive = False
            self.bytes_sent += len(data)
            return data
        self.bytes_sent += len(data)
        return chunk(data) if self.chunked else data

    def write(self, data: object) -> None:
        """The legacy ``write()`` callable returned by start_response."""
        if type(data) is not bytes:  # noqa: E721
            raise ResponseError(f"write() takes bytes, got {type(data).__name__}")
        if not self.headers_sent:
            self.send(self.head() + self.frame(data))
        elif data:
            self.send(self.frame(data))

    def finish(self) -> bytes:
        """What ends the body: the last chunk, or nothing.  A short body forbids keep-alive."""
        if not self.headers_sent:
            return self.head(0)
        if self.chunked:
            return LAST_CHUNK
        if self.body_allowed and self.content_length is not None \
                and self.bytes_sent < self.content_length:
            self.keep_alive = False
        return b""


def write_body(response: Response, result: Iterable[object],
               send: Callable[[bytes], None]) -> None:
    """Send the app's body through ``response``'s framing.  A list or tuple (the common case)
    goes out as one write with a computed Content-Length; an iterator chunk by chunk, and the
    head waits for the first non-empty chunk (PEP 3333)."""
    if type(result) in (list, tuple) and not response.headers_sent:
        parts = list(result)
        for part in parts:
            if type(part) is not bytes:  # noqa: E721
                raise ResponseError(f"the app returned {type(part).__name__}, not bytes")
        checked = cast(list[bytes], parts)
        body = checked[0] if len(checked) == 1 else b"".join(checked)
        head = response.head(len(body))
        framed = response.frame(body)
        if len(framed) > 65536:
            send(head)  # a large body is not copied just to prepend the head
            send(framed)
            tail = response.finish()
            if tail:
                send(tail)
        else:
            send(head + framed + response.finish())
        return
    for data in result:
        if type(data) is not bytes:  # noqa: E721
            raise ResponseError(f"the app yielded {type(data).__name__}, not bytes")
        if not data:
            continue
        if response.headers_sent:
            send(response.frame(data))
        else:
            send(response.head() + response.frame(data))
    tail = response.finish()
    if tail:
        send(tail)


def closing(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()

