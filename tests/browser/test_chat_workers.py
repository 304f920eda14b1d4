"""The chat page in headless Chromium across worker processes: the repository's settings with
three workers and ``[redis] mode = "local"`` (the local stack runs a real redis-server).

Two pages, each in a browser context of its own, are put on two different workers, which their
status lines name (the worker's pid): the kernel hands a new connection to the first idle worker
in a fixed order, so the second page would usually reach the first page's worker too.  While
the second page's WebSocket reconnects, that worker is stopped (SIGSTOP, then SIGCONT): it
cannot accept, and another one does.  Then each page sees the other's messages -- through
Redis.  A second test kills Redis under two pages and starts it again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appserver.bundle.redisproc import find_redis
from appserver.testing.stack import Stack, start_stack

from ..bundle.test_chat_redis import stop
from .cdp import Browser
from .test_chat import (
    CONNECT_TIMEOUT,
    DELIVERY_TIMEOUT,
    OPEN,
    REPO,
    STATUS,
    open_chat,
    say,
    wait_for_messages,
    worker_of,
)

WORKERS = 3
# Before the page's own script: remember every WebSocket it opens, so the test can close one.
KEEP_SOCKETS = """window.__sockets = [];
const Native = window.WebSocket;
window.WebSocket = function (...args) { const s = new Native(...args); window.__sockets.push(s);
                                       return s; };
Object.assign(window.WebSocket, Native);
window.WebSocket.prototype = Native.prototype;"""
CLOSED = "document.getElementById('chat-status').dataset.state === 'closed'"


def workers_of(stack: Stack) -> set[str]:
    master = stack.pids["server"]
    return set(Path(f"/proc/{master}/task/{master}/children").read_text().split())


@pytest.fixture(scope="module")
def stack(chromium: str) -> Iterator[Stack]:
    if find_redis() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with start_stack(settings_file=REPO / "settings.toml",
                     settings={"server": {"workers": WORKERS, "graceful_timeout": 5}}) as running:
        deadline = time.monotonic() + 30
        while len(workers_of(running)) < WORKERS or running.log().count("booted") < WORKERS:
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.05)
        yield running
    assert running.stopped is not None and running.stopped.graceful, running.stopped


def test_pages_on_different_workers_see_each_others_messages(stack: Stack,
                                                             browser: Browser) -> None:
    pages = open_chat(stack, browser, ["alice"])
    first = worker_of(pages["alice"])
    assert first in workers_of(stack)
    bob = pages["bob"] = browser.new_page()
    bob.call("Page.addScriptToEvaluateOnNewDocument", {"source": KEEP_SOCKETS})
    bob.goto(stack.url_for("/chat"))
    bob.wait_for(OPEN, CONNECT_TIMEOUT, "bob's WebSocket to open")
    for _ in range(5):
        if worker_of(bob) != first:
            break
        # Close bob's WebSocket (the page reconnects after 0.5 s) and stop alice's worker while
        # the page reconnects: another worker takes the handshake.  (The page itself was loaded
        # with the worker running: nginx may reuse a kept-alive connection to it for pages.)
        bob.evaluate("window.__sockets.at(-1).close()")
        bob.wait_for(CLOSED, CONNECT_TIMEOUT, "bob's WebSocket to close")
        stop(int(first))
        try:
            bob.wait_for(OPEN, CONNECT_TIMEOUT, "bob's WebSocket to reopen")
        finally:
            os.kill(int(first), signal.SIGCONT)
    second = worker_of(bob)
    assert second != first and second in workers_of(stack), [
        page.evaluate(STATUS) for page in pages.values()]
    assert "room via redis" in pages["bob"].evaluate(STATUS)
    expected = []
    for name, page in pages.items():
        text = f"{name} on worker {worker_of(page)}"
        say(page, name, text)
        expected.append([name, text])
    wait_for_messages(stack, pages, expected)


ERRORS = "[...document.querySelectorAll('#messages li.error .text')].map(e => e.textContent)"
NOTES = "[...document.querySelectorAll('#messages li .text')].map(e => e.textContent)"


def test_the_pages_show_a_redis_outage_and_recover(stack: Stack, browser: Browser) -> None:
    """Redis killed (SIGKILL by pid) mid-chat, then started again: each page shows that its
    worker lost the room, a message typed meanwhile comes back as "not delivered", no worker
    dies, and once Redis is back the pages talk again."""
    redis = stack.local.redis
    assert redis is not None
    pages = open_chat(stack, browser, ["carol", "dave"])
    workers = workers_of(stack)
    say(pages["carol"], "carol", "before")
    wait_for_messages(stack, pages, [["carol", "before"]])
    redis.kill()
    for name, page in pages.items():
        page.wait_until(ERRORS, lambda shown: any("lost the link" in e for e in shown),
                        DELIVERY_TIMEOUT, f"page {name} to show the outage")
    say(pages["dave"], "dave", "during")
    pages["dave"].wait_until(ERRORS, lambda shown: any("not delivered" in e for e in shown),
                             DELIVERY_TIMEOUT, "dave's page to say its message was not delivered")
    redis.start()
    for name, page in pages.items():
        page.wait_until(NOTES, lambda shown: any("is back" in e for e in shown),
                        DELIVERY_TIMEOUT * 2, f"page {name} to show that the link is back")
    say(pages["dave"], "dave", "after")
    wait_for_messages(stack, pages, [["carol", "before"], ["dave", "after"]])
    assert workers_of(stack) == workers  # no worker died
