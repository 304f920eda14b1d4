"""StatsD metrics with gunicorn's names, types and datagram format (``--statsd-host``).

What gunicorn 27 sends, and so what dashboards built for it expect (checked datagram for
datagram against gunicorn's own client in tests/gunicorn_compat/test_statsd.py):

* per request, from the worker: ``gunicorn.request.duration:<ms>|ms``,
  ``gunicorn.requests:1|c|@1.0`` and ``gunicorn.request.status.<code>:1|c|@1.0``;
* from the master when the number of workers changes: ``gunicorn.workers:<n>|g``;
* per warning, error, critical or exception log record: ``gunicorn.log.<level>:1|c|@1.0``.

``statsd_prefix`` goes in front of every name with one dot after it; ``dogstatsd_tags`` are
appended as ``|#tags``.  Datagrams are fire-and-forget: a missing or slow StatsD never fails or
delays a request (a send that fails is dropped, as gunicorn drops it).
"""

from __future__ import annotations

import logging
import re
import socket

from ..binds import parse_statsd_address

REQUESTS = "gunicorn.requests"
DURATION = "gunicorn.request.duration"
STATUS = "gunicorn.request.status.{}"
WORKERS = "gunicorn.workers"
LOG = "gunicorn.log.{}"


class StatsdClient:
    """One connected datagram socket per process (after fork, each worker makes its own)."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        family, target = parse_statsd_address(address)
        # gunicorn: "a trailing . is added, if not provided"
        self.prefix = re.sub(r"^(.+[^.]+)\.*$", r"\g<1>.", prefix)
        self.suffix = b"|#" + tags.encode("ascii") if tags else b""
        self.sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.connect(target)
        except OSError:  # nothing listens yet (unix) or no route: sends are dropped
            self.sock.close()
            self.sock = None

    def _send(self, line: str) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            sock.send(line.encode("ascii") + self.suffix)
        except OSError:
            pass

    def increment(self, name: str, value: int = 1) -> None:
        self._send(f"{self.prefix}{name}:{value}|c|@1.0")

    def gauge(self, name: str, value: int) -> None:
        self._send(f"{self.prefix}{name}:{value}|g")

    def timer(self, name: str, milliseconds: float) -> None:
        self._send(f"{self.prefix}{name}:{milliseconds}|ms")

    def request(self, status: str | None, duration: float) -> None:
        """One served request: its duration (seconds), its count and its status line."""
        self.timer(DURATION, _milliseconds(duration))
        self.increment(REQUESTS)
        code = status.split(" ", 1)[0] if status else ""
        if code.isdigit():
            self.increment(STATUS.format(int(code)))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _milliseconds(duration: float) -> float:
    """As gunicorn computes it from a timedelta: whole ms plus a microsecond fraction."""
    micros = round(duration * 1_000_000)
    return micros // 1_000_000 * 1000 + float(micros % 1_000_000) / 10 ** 3


_LEVELS = {logging.WARNING: "warning", logging.ERROR: "error", logging.CRITICAL: "critical"}


class StatsdLogHandler(logging.Handler):
    """Counts warning, error and critical records (and those logged with an exception) as
    ``gunicorn.log.<level>``, as gunicorn's StatsD logger does."""

    def __init__(self, client: StatsdClient) -> None:
        super().__init__(logging.WARNING)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        level: str | None = "exception"  # logger.exception(): gunicorn counts it apart from error
        if not (record.exc_info and record.levelno == logging.ERROR):
            level = _LEVELS.get(record.levelno)
        if level is not None:
            self.client.increment(LOG.format(level))
