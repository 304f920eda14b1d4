"""Sans-I/O response serialisation: status line, header section and body framing (RFC 9112 §4-7).

Nothing here touches a socket.  Header values an application supplies are checked before a byte
is produced: a name that is not a token or a value with CR, LF or NUL would let the app split the
response (RFC 9110 §5.5), so it is an error rather than something to repair.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(r"([1-9][0-9][0-9]) [^\r\n\x00]*")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")

# Hop-by-hop fields are the server's business (RFC 9110 §7.6.1; PEP 3333 forbids apps to set
# them).  Connection is honoured when it asks to close; the rest are dropped.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade"})

# Responses that never have a body (RFC 9110 §6.4.1).
_NO_BODY_STATUSES = frozenset({204, 304})

_token_cache: dict[str, bool] = {}


class ResponseError(ValueError):
    """The application produced a status or header that cannot be sent."""


# The app-facing checks take ``object``: an app may pass anything, and the compiled build
# (appserver/_build.py) would turn a narrower annotation into a TypeError before the check that
# answers it with a ResponseError (a 500 and a log line naming the mistake).
def check_status(status: object) -> int:
    """Validate a WSGI status string like ``"200 OK"``; return the code."""
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise ResponseError(f"invalid status {status!r}: expected '200 OK' style")
    return int(status[:3])


def check_header(name: object, value: object) -> None:
    """Reject a header the app must not send: a non-token name or CR/LF/NUL in the value."""
    if type(name) is not str or type(value) is not str:  # noqa: E721 - PEP 3333 wants exact str
        raise ResponseError(f"header {name!r}: {value!r}: names and values must be str")
    known = _token_cache.get(name)
    if known is None:
        known = bool(_TOKEN.fullmatch(name))
        if len(_token_cache) < 4096:  # bounded: names come from apps, not clients
            _token_cache[name] = known
    if not known:
        raise ResponseError(f"invalid header name {name!r}")
    if _BAD_VALUE_CHARS.search(value):
        raise ResponseError(f"header {name!r} has CR, LF or NUL in its value")


def body_allowed(status_code: int, method: str) -> bool:
    return method != "HEAD" and status_code not in _NO_BODY_STATUSES and status_code >= 200


def serialize_head(version: str, status: str, headers: list[tuple[str, str]]) -> bytes:
    """The status line and header section, ready to send (values already checked)."""
    lines = [f"HTTP/{version} {status}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"header not encodable as ISO-8859-1: {exc}") from None


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); never call with empty data."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header value (RFC 9110 §6.6.1), recomputed at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


# Told the status of every error response the server makes itself (how parse errors are
# counted); set in a worker by appserver.metrics.recorder, None otherwise.
error_observer: Callable[[int], None] | None = None


def error_response(status: int, detail: str = "", *, version: str = "1.1",
                   extra_headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete plain-text error response that closes the connection."""
    if error_observer is not None:
        error_observer(status)
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n".encode()
    if detail:
        body += detail.encode("ascii", "replace")[:512] + b"\n"
    head = serialize_head(version, f"{status} {phrase}", [
        ("Date", http_date()),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        *(extra_headers or []),
    ])
    return head + body
