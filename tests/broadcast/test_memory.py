"""The in-process backend and the hub: fan-out, order, bounded queues, async subscriptions."""

from __future__ import annotations

import asyncio
import threading

import pytest

from appserver.broadcast import OVERFLOW, Broadcast

pytestmark = pytest.mark.timeout(30)


def test_every_subscription_of_the_room_gets_each_message_in_order() -> None:
    bc = Broadcast()
    a, b, other = bc.subscribe("lobby"), bc.subscribe("lobby"), bc.subscribe("elsewhere")
    for i in range(5):
        assert bc.publish("lobby", f"m{i}") == 2
    for sub in (a, b):
        assert [sub.get(1).data for _ in range(5)] == [f"m{i}" for i in range(5)]  # type: ignore[union-attr]
    assert other.get(0.05) is None and not other.closed
    a.close()
    assert a.get() is None and a.close_code is None
    assert bc.publish("lobby", "after") == 1 and bc.subscribers("lobby") == 1


def test_a_full_queue_drops_that_subscription_with_1013_and_nobody_else() -> None:
    bc = Broadcast(queue_size=3)
    slow, fast = bc.subscribe("lobby"), bc.subscribe("lobby", queue_size=100)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(e.data for e in fast))
    reader.start()
    for i in range(10):
        bc.publish("lobby", str(i))
    assert slow.closed and slow.close_code == OVERFLOW == 1013
    assert slow.get(1) is None  # what was queued is gone too: the consumer is cut, not gapped
    assert bc.subscribers("lobby") == 1
    fast.close()
    reader.join(5)
    assert received == [str(i) for i in range(10)]


def test_concurrent_publishers_give_every_subscriber_the_same_order() -> None:
    bc = Broadcast(queue_size=10_000)
    subs = [bc.subscribe("r") for _ in range(3)]

    def publisher(name: str) -> None:
        for i in range(300):
            bc.publish("r", f"{name}{i}")

    threads = [threading.Thread(target=publisher, args=(n,)) for n in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    orders = [[sub.get(1).data for _ in range(900)] for sub in subs]  # type: ignore[union-attr]
    assert orders[0] == orders[1] == orders[2]
    for name in "xyz":  # each publisher's own order is kept
        mine = [m for m in orders[0] if m[0] == name]
        assert mine == [f"{name}{i}" for i in range(300)]


def test_get_times_out_without_closing() -> None:
    sub = Broadcast().subscribe("r")
    assert sub.get(timeout=0.05) is None and not sub.closed


def test_async_subscription_on_the_event_loop() -> None:
    async def main() -> list[str]:
        bc = Broadcast(queue_size=2)
        async with bc.subscribe_async("r", queue_size=10) as sub:
            slow = bc.subscribe_async("r")
            for text in ("a", "b", "c"):
                await bc.publish_async("r", text)
            assert slow.closed and slow.close_code == OVERFLOW  # never read: dropped at "c"
            assert await slow.get() is None
            # A publish from another thread wakes the loop's consumer.
            threading.Thread(target=bc.publish, args=("r", "from a thread")).start()
            got = [await asyncio.wait_for(sub.get(), 5) for _ in range(4)]
            return [e.data for e in got if e is not None]

    assert asyncio.run(main()) == ["a", "b", "c", "from a thread"]


def test_the_environment_chooses_the_backend() -> None:
    assert Broadcast.from_environ({}).backend.name == "memory"
    assert Broadcast.from_environ({"REDIS_URL": "redis://r:6379/0"}).backend.name == "redis"
    # The bundle's "off" (an empty APPSERVER_REDIS_URL) wins over a REDIS_URL that happens to be
    # in the environment.
    assert Broadcast.from_environ({"APPSERVER_REDIS_URL": "",
                                   "REDIS_URL": "redis://r:6379/0"}).backend.name == "memory"
    chosen = Broadcast.from_environ({"APPSERVER_REDIS_URL": "unix:///run/r.sock"}).backend
    assert chosen.name == "redis" and chosen.url == "unix:///run/r.sock"  # type: ignore[attr-defined]
