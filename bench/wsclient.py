"""The WebSocket load generator: echo round trips, and many idle connections.

Design note: the client must cost far less per message than the servers it measures, on a
2-core machine it shares with nginx and the server.  A general WebSocket library (the
``websockets`` package) spends more CPU per message than a lean server does, so this is a plain
asyncio ``Protocol`` (on uvloop when installed) that speaks only the client side of RFC 6455
the benchmark needs:

* the opening handshake, checking the 101 status and ``Sec-WebSocket-Accept`` (§4.1);
* one precomputed masked frame per connection, resent for every round trip.  RFC 6455 §5.3 asks
  for a fresh mask per frame; servers cannot check that, and re-masking each frame would only
  add client CPU, so the mask is chosen once per connection;
* unmasked server frames parsed from a buffer (7-, 16- and 64-bit lengths); pings answered with
  pongs; a close frame, a masked server frame, or an echo that differs from what was sent is
  counted as an error and ends that connection.

Each connection has one message in flight: a round trip is send, wait for the echo, send again.
The measurement window is given as an absolute ``time.monotonic()`` instant (CLOCK_MONOTONIC,
the same clock in every process on the machine), so the controller samples CPU times at the
same moments the clients start and stop counting, without any message passing.

Run as ``python -m bench.wsclient echo ...`` (one process of the echo load, printing one JSON
line); the idle-connection helpers (:func:`open_idle`, :func:`sweep`, :func:`close_all`) are
used in-process by :mod:`bench.ws`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RESULT_MARKER = "BENCH_WS_RESULT "
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA

# A target is ("unix", path) or ("tcp", "host:port").
Target = tuple[str, str]


def parse_target(text: str) -> Target:
    kind, _, where = text.partition(":")
    if kind not in ("unix", "tcp") or not where:
        raise ValueError(f"target must be unix:PATH or tcp:HOST:PORT, not {text!r}")
    return kind, where


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def client_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One masked, final frame (RFC 6455 §5.2)."""
    mask = mask if mask is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    # XOR the whole payload as one integer: no per-byte Python loop.
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return head + mask + masked


def handshake(path: str, host: str) -> tuple[bytes, bytes]:
    """The upgrade request and the ``Sec-WebSocket-Accept`` value the server must answer."""
    key = base64.b64encode(os.urandom(16))
    request = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
               b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
               b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return request, accept


class WsError(Exception):
    pass


class Client(asyncio.Protocol):
    """One WebSocket connection.  ``on_message`` is called with each text or binary payload."""

    def __init__(self, path: str, host: str, payload: bytes,
                 on_message: Callable[[Client, bytes], None] | None = None) -> None:
        self.request, self._accept = handshake(path, host)
        self.payload = payload
        self.frame = client_frame(OP_TEXT, payload)
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiter: asyncio.Future[bytes] | None = None  # an awaited echo (idle sweeps)
        self.error: str | None = None
        self.lost = False
        self.sent_at = 0.0
        self._buf = b""
        self._upgraded = False

    # ---- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            head, buf = buf[:end], buf[end + 4:]
            status_line = head.split(b"\r\n", 1)[0]
            if status_line[9:12] != b"101":
                self._fail(f"handshake answered {status_line.decode(errors='replace')!r}")
                return
            if self._accept not in head:
                self._fail("handshake without the right Sec-WebSocket-Accept")
                return
            self._upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, start = b1 & 0x7F, pos + 2
            if b1 & 0x80:
                self._fail("the server sent a masked frame")
                return
            if n == 126:
                if size - pos < 4:
                    break
                n, start = struct.unpack_from("!H", buf, pos + 2)[0], pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, start = struct.unpack_from("!Q", buf, pos + 2)[0], pos + 10
            if size - start < n:
                break
            payload = buf[start:start + n]
            pos = start + n
            opcode = b0 & 0x0F
            if not b0 & 0x80 or opcode == 0:
                self._fail("the server fragmented a message (not expected for small echoes)")
                return
            if opcode in (OP_TEXT, OP_BINARY):
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(payload)
                elif self.on_message is not None:
                    self.on_message(self, payload)
            elif opcode == OP_PING:
                self.write(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                self._fail(f"the server closed the WebSocket ({code})")
                return
        self._buf = buf[pos:] if pos < size else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.error is None:
            self.error = f"connection lost ({exc or 'closed by the server'})"
        self._wake()

    # ---- use ------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self) -> None:
        self.sent_at = time.monotonic()
        self.write(self.frame)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        self._wake()
        self.abort()

    def _wake(self) -> None:
        for fut in (self.opened, self.waiter):
            if fut is not None and not fut.done():
                fut.set_exception(WsError(self.error or "failed"))


async def connect(target: Target, path: str, payload: bytes,
                  on_message: Callable[[Client, bytes], None] | None = None) -> Client:
    """Open one WebSocket and complete the handshake."""
    loop = asyncio.get_running_loop()
    host = "bench"

    def factory() -> Client:
        return Client(path, host, payload, on_message)

    if target[0] == "unix":
        _, proto = await loop.create_unix_connection(factory, target[1])
    else:
        address, _, port = target[1].rpartition(":")
        _, proto = await loop.create_connection(factory, address, int(port))
    await proto.opened
    return proto


# ---------------------------------------------------------------------------------------------
# Echo load.


@dataclass
class EchoResult:
    clients: int
    round_trips: int = 0       # echoes received inside the window
    window_s: float = 0.0
    errors: int = 0            # connections that failed (bad echo, close, loss)
    error_kinds: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    late_start: bool = False   # the connections were not all open when the window began

    @property
    def rate(self) -> float:
        return self.round_trips / self.window_s if self.window_s else 0.0


async def echo_load(target: Target, path: str, *, clients: int, size: int, start_at: float,
                    duration: float, connect_timeout: float = 30.0) -> EchoResult:
    """``clients`` connections echo back to back; count the round trips inside the window."""
    result = EchoResult(clients)
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    latencies: list[float] = []
    window = [start_at, start_at + duration]
    running = True

    def on_message(client: Client, echoed: bytes) -> None:
        now = time.monotonic()
        if echoed != client.payload:
            client._fail(f"echo differs ({len(echoed)} bytes back for {len(client.payload)})")
            return
        if window[0] <= now <= window[1]:
            result.round_trips += 1
            latencies.append(now - client.sent_at)
        if running:
            client.send()

    conns = await asyncio.wait_for(
        asyncio.gather(*(connect(target, path, payload, on_message) for _ in range(clients))),
        connect_timeout)
    result.late_start = time.monotonic() > start_at
    for client in conns:
        client.send()
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    running = False
    result.window_s = duration
    for client in conns:
        if client.error is not None:
            result.errors += 1
            result.error_kinds[client.error] = result.error_kinds.get(client.error, 0) + 1
        client.abort()
    if latencies:
        latencies.sort()

        def pick(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        result.p50_ms, result.p90_ms, result.p99_ms = pick(0.50), pick(0.90), pick(0.99)
        result.max_ms = latencies[-1] * 1000
    return result


# ---------------------------------------------------------------------------------------------
# Idle connections (used in-process by bench.ws).


@dataclass
class OpenResult:
    opened: int
    seconds: float
    errors: dict[str, int]


async def open_idle(target: Target, path: str, count: int, *, into: list[Client],
                    concurrency: int = 100, timeout: float = 120.0) -> OpenResult:
    """Open ``count`` more WebSockets (at most ``concurrency`` handshakes at once), each checked
    with one echo, appending them to ``into``.  Stops early on the first batch of failures."""
    started = time.monotonic()
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)
    payload = b"idle?"
    deadline = started + timeout

    async def one() -> None:
        async with gate:
            if errors or time.monotonic() > deadline:
                return
            try:
                client = await asyncio.wait_for(connect(target, path, payload),
                                                max(0.1, deadline - time.monotonic()))
                into.append(client)
                await asyncio.wait_for(echo_once(client), max(0.1, deadline - time.monotonic()))
            except (TimeoutError, OSError, WsError) as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                errors[why] = errors.get(why, 0) + 1

    before = len(into)
    await asyncio.gather(*(one() for _ in range(count)))
    alive = sum(1 for c in into[before:] if c.error is None)
    return OpenResult(alive, time.monotonic() - started, errors)


async def echo_once(client: Client) -> None:
    client.waiter = asyncio.get_running_loop().create_future()
    client.send()
    echoed = await client.waiter
    client.waiter = None
    if echoed != client.payload:
        raise WsError("echo differs")


async def sweep(clients: list[Client], *, concurrency: int = 500, timeout: float = 60.0) -> int:
    """One echo on every connection; returns how many answered."""
    gate = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + timeout

    async def one(client: Client) -> bool:
        if client.error is not None:
            return False
        async with gate:
            try:
                await asyncio.wait_for(echo_once(client), max(0.1, deadline - time.monotonic()))
                return True
            except (TimeoutError, OSError, WsError):
                return False

    return sum(await asyncio.gather(*(one(c) for c in clients)))


def close_all(clients: list[Client]) -> None:
    for client in clients:
        client.abort()
    clients.clear()


# ---------------------------------------------------------------------------------------------
# Command line: one process of the echo load.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wsclient")
    sub = parser.add_subparsers(dest="mode", required=True)
    echo = sub.add_parser("echo", help="echo round trips; prints one JSON line")
    echo.add_argument("--target", required=True, help="unix:PATH or tcp:HOST:PORT")
    echo.add_argument("--path", default="/ws")
    echo.add_argument("--clients", type=int, default=32)
    echo.add_argument("--size", type=int, default=64, help="message size in bytes")
    echo.add_argument("--start-at", type=float, required=True,
                      help="time.monotonic() at which counting starts")
    echo.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    loop = new_loop()
    try:
        result = loop.run_until_complete(echo_load(
            parse_target(args.target), args.path, clients=args.clients, size=args.size,
            start_at=args.start_at, duration=args.duration))
    except (TimeoutError, OSError, WsError) as exc:
        print(f"wsclient: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    print(RESULT_MARKER + json.dumps(asdict(result)), flush=True)
    return 0


def combine(results: list[EchoResult]) -> EchoResult:
    """Several client processes as one: counts add up; percentiles are the worst process's
    (a conservative figure: the processes' latency histograms are not merged)."""
    total = EchoResult(sum(r.clients for r in results))
    total.window_s = max(r.window_s for r in results)
    total.round_trips = sum(r.round_trips for r in results)
    total.errors = sum(r.errors for r in results)
    for r in results:
        for kind, n in r.error_kinds.items():
            total.error_kinds[kind] = total.error_kinds.get(kind, 0) + n
    total.p50_ms = statistics.median(r.p50_ms for r in results)
    total.p90_ms = max(r.p90_ms for r in results)
    total.p99_ms = max(r.p99_ms for r in results)
    total.max_ms = max(r.max_ms for r in results)
    total.late_start = any(r.late_start for r in results)
    return total


if __name__ == "__main__":
    raise SystemExit(main())
