"""The Redis backend against a real redis-server: fan-out across processes, slow consumers,
publishing during an outage, reconnection after a restart, and fork safety."""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
import textwrap
import time

import pytest

from appserver.broadcast import OVERFLOW, Broadcast, PublishError
from appserver.bundle.redisproc import RedisServer

pytestmark = pytest.mark.timeout(60)

CHILD = textwrap.dedent('''
    import os, sys
    from appserver.broadcast import Broadcast
    bc = Broadcast.from_url(sys.argv[1])
    sub = bc.subscribe("lobby")
    print("ready", flush=True)
    bc.publish("lobby", f"hello from {os.getpid()}")
    for event in sub:
        print(event.type, event.data, flush=True)
        if event.data == "bye":
            break
''')


def clients(server: RedisServer) -> int:
    out = subprocess.run(["redis-cli", "-s", str(server.socket), "client", "list"],
                         capture_output=True, text=True, timeout=5, check=True).stdout
    return len(out.splitlines())


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_messages_fan_out_across_two_processes(redis_server: RedisServer) -> None:
    bc = Broadcast.from_url(redis_server.url)
    sub = bc.subscribe("lobby")
    child = subprocess.Popen([sys.executable, "-c", CHILD, redis_server.url],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        event = sub.get(10)
        assert event is not None and event.data == f"hello from {child.pid}"
        assert bc.publish("lobby", "from the parent") == 2  # two processes subscribed
        assert bc.publish("lobby", "bye") == 2
        lines = [child.stdout.readline().strip() for _ in range(3)]
        assert lines == [f"message hello from {child.pid}", "message from the parent",
                         "message bye"]
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait(5)
        bc.close()


def test_one_subscription_connection_per_process(redis_server: RedisServer) -> None:
    bc = Broadcast.from_url(redis_server.url)
    assert clients(redis_server) == 1  # redis-cli itself: nothing connects before first use
    subs = [bc.subscribe(f"room{i % 3}") for i in range(50)]
    bc.publish("room0", "x")
    # one subscriber connection and one pooled publisher connection, whatever the subscriptions
    assert clients(redis_server) == 1 + 2
    assert all(s.get(5) is not None for s in subs[::3])
    bc.close()


def test_a_slow_subscriber_is_dropped_and_the_others_keep_receiving(
        redis_server: RedisServer) -> None:
    bc = Broadcast.from_url(redis_server.url, queue_size=5)
    slow, fast = bc.subscribe("r"), bc.subscribe("r", queue_size=1000)
    for i in range(20):
        bc.publish("r", str(i))
    got = [fast.get(5) for _ in range(20)]
    assert [e.data for e in got if e] == [str(i) for i in range(20)]
    assert slow.closed and slow.close_code == OVERFLOW and slow.get(1) is None
    bc.publish("r", "still here")
    assert (e := fast.get(5)) is not None and e.data == "still here"
    bc.close()


def test_publishing_while_redis_is_down_raises(redis_server: RedisServer) -> None:
    bc = Broadcast.from_url(redis_server.url)
    bc.publish("r", "fine")
    redis_server.kill()
    with pytest.raises(PublishError, match="unreachable") as info:
        bc.publish("r", "lost?")
    assert redis_server.url.removeprefix("unix://") in str(info.value)
    bc.close()


def test_the_subscriber_reconnects_after_a_restart_and_says_so(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appserver.broadcast")
    bc = Broadcast.from_url(redis_server.url)
    sub = bc.subscribe("r")
    bc.publish("r", "before")
    assert (e := sub.get(5)) is not None and e.data == "before"
    redis_server.kill()
    assert (e := sub.get(10)) is not None and e.type == "lost"
    assert not bc.connected
    assert any("no connection to Redis" in r.getMessage() for r in caplog.records)
    redis_server.start()
    assert (e := sub.get(15)) is not None and e.type == "restored"
    assert any("reconnected to Redis" in r.getMessage() for r in caplog.records)
    assert bc.publish("r", "after") == 1
    assert (e := sub.get(5)) is not None and (e.type, e.data) == ("message", "after")
    bc.close()


def _child_uses_inherited(bc: Broadcast, queue: multiprocessing.Queue[str]) -> None:
    sub = bc.subscribe("fork")
    bc.publish("fork", "child")
    event = sub.get(10)
    queue.put(event.data if event else "nothing")


def test_a_forked_child_gets_its_own_connections(redis_server: RedisServer) -> None:
    """Used before the fork (as --preload could do): the child starts its own backend."""
    bc = Broadcast.from_url(redis_server.url)
    parent_sub = bc.subscribe("fork")
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_child_uses_inherited, args=(bc, queue))
    child.start()
    try:
        assert queue.get(timeout=20) == "child"
        child.join(10)
        assert child.exitcode == 0
        assert (e := parent_sub.get(5)) is not None and e.data == "child"
    finally:
        if child.is_alive():
            child.kill()
        bc.close()


def test_async_publish_and_subscribe(redis_server: RedisServer) -> None:
    import asyncio

    async def main() -> str:
        bc = Broadcast.from_url(redis_server.url)
        async with bc.subscribe_async("r") as sub:
            await bc.publish_async("r", "async hello")
            event = await asyncio.wait_for(sub.get(), 5)
        bc.close()
        return event.data if event else ""

    assert asyncio.run(main()) == "async hello"


def test_passwords_stay_out_of_logs_and_errors() -> None:
    from appserver.broadcast.redis_backend import safe_url

    assert safe_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert safe_url("rediss://user:s3cret@cache:6380") == "rediss://user:***@cache:6380"
    assert safe_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
    bc = Broadcast.from_url("redis://:s3cret@127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(PublishError) as info:
        bc.publish("r", "x")
    assert "s3cret" not in str(info.value) and ":***@127.0.0.1:1/0" in str(info.value)
    bc.close()
