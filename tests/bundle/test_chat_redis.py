"""The sample chat across workers and replicas, through real nginx, the real server and a real
redis-server (``[redis] mode = "local"``: the local stack starts it in its run directory).

* clients that reached different worker processes (the welcome names the pid) hear each other,
  on gthread (the settings' class), gevent, eventlet and asyncio;
* two stacks (two masters, two nginx) sharing one Redis are two replicas of one chat;
* Redis killed mid-chat (SIGKILL) and started again: the clients are told of the outage, a
  message sent meanwhile comes back to its sender as an error (never dropped silently), no
  worker dies, and the chat works again once Redis is back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wsproto.events import CloseConnection, Ping, TextMessage

from appserver.bundle.redisproc import find_redis
from appserver.testing.stack import Stack, start_stack

from .conftest import REPO
from .test_websocket_locations import Client

pytestmark = [pytest.mark.usefixtures("nginx"), pytest.mark.timeout(180),
              pytest.mark.skipif(find_redis() is None, reason="apt-get install redis-server")]

WORKERS = 3


def workers_of(stack: Stack) -> set[int]:
    """The server master's children (Linux /proc)."""
    master = stack.pids["server"]
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def stop(pid: int) -> None:
    """SIGSTOP, and wait until every thread of ``pid`` has stopped: until then a thread still
    asleep in epoll_wait would be handed the next connection, and keep it while stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    tasks = Path(f"/proc/{pid}/task")
    while any((task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T"
              for task in tasks.iterdir()):
        assert time.monotonic() < deadline, f"worker {pid} did not stop"
        time.sleep(0.01)


def on_two_workers(stack: Stack) -> list[tuple[Client, int]]:
    """Two clients on two different workers.  Left alone, the kernel hands each new connection
    to the first idle worker in a fixed order, so both would usually reach the same one; while
    the second connects, the first one's worker is stopped (SIGSTOP, then SIGCONT) and cannot
    accept, so another worker does."""
    a = Client(stack.url, "/ws/chat")
    first = a.receive("welcome")["worker"]
    stop(first)
    try:
        b = Client(stack.url, "/ws/chat")
    finally:
        os.kill(first, signal.SIGCONT)
    second = b.receive("welcome")["worker"]
    assert first != second and {first, second} <= workers_of(stack), (first, second)
    return [(a, first), (b, second)]


def wait_for_workers(stack: Stack, count: int) -> None:
    deadline = time.monotonic() + 30  # every worker up (and subscribed to nothing yet)
    while len(workers_of(stack)) < count or stack.log().count("booted") < count:
        assert time.monotonic() < deadline, stack.log()
        time.sleep(0.05)


def say_and_hear(speaker: Client, listeners: list[Client], text: str) -> None:
    speaker.send(name="tester", text=text)
    for client in [speaker, *listeners]:
        while client.receive("message")["text"] != text:
            pass  # an earlier message (the other tests share the room)


def expect_system(client: Client, event: str) -> None:
    """Wait for a system event (a worker that was slow to reach Redis when the client joined
    may have said "lost" and "restored" before; those are skipped)."""
    while client.receive("system")["event"] != event:
        pass


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with start_stack(settings_file=REPO / "settings.toml",
                     settings={"server": {"workers": WORKERS, "graceful_timeout": 5}}) as running:
        assert running.local.redis is not None and running.local.redis.ping()
        wait_for_workers(running, WORKERS)
        yield running


def test_clients_on_different_workers_hear_each_other(stack: Stack) -> None:
    clients = on_two_workers(stack)
    (a, worker_a), (b, worker_b) = clients
    try:
        say_and_hear(a, [b], f"from worker {worker_a}")
        say_and_hear(b, [a], f"from worker {worker_b}")
    finally:
        for client, _ in clients:
            client.close()


@pytest.mark.parametrize("worker_class", ["gevent", "eventlet", "asyncio"])
def test_other_worker_classes(worker_class: str) -> None:
    """The same chat on the green and event-loop classes: the relay "thread" is a greenlet
    under gevent/eventlet (monkey-patched), a thread beside the asyncio worker's hub greenlets."""
    with start_stack(settings_file=REPO / "settings.toml",
                     settings={"server": {"workers": 2, "worker_class": worker_class,
                                          "graceful_timeout": 5}}) as running:
        wait_for_workers(running, 2)
        clients = on_two_workers(running)
        (a, worker_a), (b, _) = clients
        try:
            say_and_hear(a, [b], f"{worker_class}: from worker {worker_a}")
        finally:
            for client, _ in clients:
                client.close()


def test_two_replicas_sharing_one_redis(stack: Stack) -> None:
    assert stack.local.redis is not None
    url = stack.local.redis.url
    with start_stack(settings_file=REPO / "settings.toml",
                     settings={"server": {"workers": 2, "graceful_timeout": 5},
                               "redis": {"mode": "url", "url": url}}) as replica:
        assert replica.local.redis is None  # it runs none of its own: it uses the first's
        a, b = Client(stack.url, "/ws/chat"), Client(replica.url, "/ws/chat")
        try:
            assert a.receive("welcome")["worker"] in workers_of(stack)
            assert b.receive("welcome")["worker"] in workers_of(replica)
            say_and_hear(a, [b], "replica one to two")
            say_and_hear(b, [a], "replica two to one")
        finally:
            a.close()
            b.close()


def test_redis_killed_mid_chat_and_started_again(stack: Stack) -> None:
    redis = stack.local.redis
    assert redis is not None
    # Any two clients: whether they share a worker does not matter here.
    clients = [(Client(stack.url, "/ws/chat"), 0) for _ in range(2)]
    (a, _), (b, _) = clients
    for client in (a, b):
        client.receive("welcome")
    before = workers_of(stack)
    try:
        say_and_hear(a, [b], "before the outage")
        redis.kill()  # SIGKILL, by pid
        # Every client is told that its worker lost the room...
        for client in (a, b):
            expect_system(client, "lost")
        # ...and a message sent now comes back to its sender as an error, not into a void.
        a.send(name="tester", text="during the outage")
        assert "not delivered" in a.receive("error")["text"]
        redis.start()
        for client in (a, b):
            expect_system(client, "restored")
        say_and_hear(b, [a], "after the outage")
        assert workers_of(stack) == before  # no worker died
        log = stack.log()
        assert "broadcast: no connection to Redis" in log
        assert "broadcast: reconnected to Redis" in log
    finally:
        for client, _ in clients:
            client.close()


def test_the_asgi_chat_across_workers() -> None:
    """The ASGI twin (sample_app/asgi.py: subscribe_async, publish_async) with Redis on and two
    workers of the asyncio class."""
    with start_stack(settings_file=REPO / "settings.asgi.toml",
                     settings={"server": {"workers": 2, "graceful_timeout": 5},
                               "redis": {"mode": "local"}}) as running:
        wait_for_workers(running, 2)
        clients = on_two_workers(running)
        (a, worker_a), (b, worker_b) = clients
        try:
            say_and_hear(a, [b], f"asgi: from worker {worker_a}")
            say_and_hear(b, [a], f"asgi: from worker {worker_b}")
        finally:
            for client, _ in clients:
                client.close()


def test_a_stalled_client_is_cut_and_nobody_else_waits() -> None:
    """A client that stops reading while the room is busy: its relay's writes fill the socket
    and block, its queue overflows, and one ping interval later the worker cuts it (its relay is
    freed, its handler leaves the room).  Meanwhile the others receive every message in order,
    and the worker's heartbeat never stalls: the same workers run afterwards."""
    with start_stack(settings_file=REPO / "settings.toml",
                     settings={"server": {"workers": 1, "graceful_timeout": 5,
                                          "websocket_ping_interval": 2}}) as running:
        wait_for_workers(running, 1)
        before = workers_of(running)
        stalled = Client(running.url, "/ws/chat")
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled_name = stalled.receive("welcome")["name"]
        listener, speaker = Client(running.url, "/ws/chat"), Client(running.url, "/ws/chat")
        listener.receive("welcome")
        speaker.receive("welcome")
        heard: dict[Client, list[str]] = {listener: [], speaker: []}
        notes: list[str] = []  # errors and system events: none expected
        gone, done = threading.Event(), threading.Event()

        def listen(client: Client) -> None:
            """Read everything (the speaker hears its own messages too), answer pings."""
            parts: list[str] = []
            while not done.is_set():
                try:
                    event = client._next(
                        lambda e: isinstance(e, TextMessage | CloseConnection | Ping))
                except (OSError, AssertionError):
                    if done.is_set():
                        return  # the test closed the socket under it
                    raise
                if isinstance(event, Ping):  # the server pings after 2 s of silence
                    client.sock.sendall(client.ws.send(event.response()))
                    continue
                assert isinstance(event, TextMessage), f"a reader was closed: {event}"
                parts.append(event.data)
                if not event.message_finished:  # wsproto hands big messages over in parts
                    continue
                data = json.loads("".join(parts))
                parts.clear()
                if data["type"] == "message":
                    heard[client].append(data["text"])
                elif data["type"] in ("error", "system"):
                    notes.append(f"{'listener' if client is listener else 'speaker'}: {data}")
                elif data.get("event") == "leave" and data["name"] == stalled_name:
                    gone.set()

        for client in (listener, speaker):
            threading.Thread(target=listen, args=(client,), daemon=True).start()
        sent = 0
        deadline = time.monotonic() + 90
        try:
            while not gone.is_set():  # 1 MB at a time until the stalled client is let go
                assert time.monotonic() < deadline, f"{sent} messages sent, the client still in"
                for _ in range(500):
                    speaker.send(name="speaker", text=f"{sent:06d} " + "x" * 1900)
                    sent += 1
                gone.wait(0.5)
            # Then the listener's backlog: as long as it keeps coming (a slow machine, the
            # pure build), not past 20 s without a message.
            last, last_change = len(heard[listener]), time.monotonic()
            while len(heard[listener]) < sent and time.monotonic() - last_change < 20:
                time.sleep(0.05)
                if len(heard[listener]) != last:
                    last, last_change = len(heard[listener]), time.monotonic()
            got = [int(text.split()[0]) for text in heard[listener]]
            assert got == list(range(sent)), (len(got), sent, notes[:5], running.log()[-3000:])
            assert workers_of(running) == before  # no worker died or was killed
            assert "timed out" not in running.log().lower()
        finally:
            done.set()
            for client in (stalled, listener, speaker):
                client.sock.close()
