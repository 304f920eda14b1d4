"""The sample app's chat page in headless Chromium, through the real stack.

nginx serves the page's script and style itself and passes the WebSocket upgrade on /ws/ to the
app server (gthread, one worker, as in settings.toml); two tabs, each in a browser context of
its own, type into the page's form and press Enter.  Every wait is bounded: a message that does
not arrive fails the test, with what each page shows and the logs' last lines.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appserver.bundle.tools import find_nginx
from appserver.testing.stack import Stack, start_stack

from .cdp import Browser, Page
from .conftest import in_ci

REPO = Path(__file__).resolve().parents[2]
# The repository's settings, on free ports; one worker, so both tabs share one room (the shipped
# settings say so too; stated here because the test depends on it).
OVERRIDES = {"server": {"workers": 1, "graceful_timeout": 5}}

OPEN = "document.getElementById('chat-status').dataset.state === 'open'"
MESSAGES = """[...document.querySelectorAll('#messages li.message')].map(
    li => [li.querySelector('.name').textContent, li.querySelector('.text').textContent])"""
SHOWN = "document.getElementById('messages').innerText"
STATUS = "document.getElementById('chat-status').textContent"
CONNECT_TIMEOUT = 15.0
DELIVERY_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def stack(chromium: str) -> Iterator[Stack]:
    """The stack, once Chromium is known to be there (a skip costs no boot)."""
    if find_nginx() is None:
        message = "nginx is not installed (apt-get install nginx-light)"
        if in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    with start_stack(settings_file=REPO / "settings.toml", settings=OVERRIDES) as running:
        yield running
    assert running.stopped is not None and running.stopped.graceful, running.stopped


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def diagnose(stack: Stack, pages: dict[str, Page]) -> str:
    """What each page shows and the logs' last lines, for a failure message."""
    out = []
    for name, page in pages.items():
        out.append(f"--- page {name}: {page.evaluate(STATUS)}\n{page.evaluate(SHOWN)}")
    out.append(f"--- appserver.log\n{tail(stack.log('appserver.log'))}")
    out.append(f"--- nginx-error.log\n{tail(stack.log('nginx-error.log'))}")
    return "\n".join(out)


def open_chat(stack: Stack, browser: Browser, names: list[str]) -> dict[str, Page]:
    pages = {name: browser.new_page() for name in names}
    for page in pages.values():
        page.goto(stack.url_for("/chat"))
    for name, page in pages.items():
        try:
            page.wait_for(OPEN, CONNECT_TIMEOUT, f"page {name}'s WebSocket to open")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(stack, pages)}") from None
    return pages


def say(page: Page, name: str, text: str) -> None:
    page.fill("#chat-name", name)
    page.fill("#chat-text", text)
    page.press_enter()


def wait_for_messages(stack: Stack, pages: dict[str, Page],
                      expected: list[list[str]]) -> None:
    """Every page shows exactly ``expected`` (name, text) messages, in any order."""
    want = sorted(expected)
    for name, page in pages.items():
        try:
            page.wait_until(MESSAGES, lambda shown: sorted(shown) == want, DELIVERY_TIMEOUT,
                            f"page {name} to show {want}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(stack, pages)}") from None


def test_two_pages_see_each_others_messages(stack: Stack, browser: Browser) -> None:
    pages = open_chat(stack, browser, ["alice", "bob"])
    # Both reached the same worker (one worker), which the page names in its status.
    statuses = {name: page.evaluate(STATUS) for name, page in pages.items()}
    assert len({status.split(":")[0] for status in statuses.values()}) == 1, statuses
    expected = []
    for name, page in pages.items():
        text = f"hello from {name} ✓ <b>not bold</b>"  # shown as text, never as HTML
        say(page, name, text)
        expected.append([name, text])
    wait_for_messages(stack, pages, expected)
    for page in pages.values():
        assert page.evaluate("document.querySelectorAll('#messages b').length") == 0
        assert page.evaluate("document.getElementById('chat-text').value") == ""  # sent


def worker_of(page: Page) -> str:
    """The worker pid the page's status names ("Connected to worker 1234: 2 here.")."""
    return str(page.evaluate(STATUS).split(":")[0].split()[-1])


def test_pages_reconnect_after_a_graceful_reload(stack: Stack, browser: Browser) -> None:
    """HUP starts a new worker; the old one closes its WebSockets with 1012 (service restart),
    and each page reconnects by itself, to the new worker: nginx gives every handshake a new
    upstream connection, which only a serving worker accepts."""
    pages = open_chat(stack, browser, ["carol", "dave"])
    old_worker = worker_of(pages["carol"])
    os.kill(stack.pids["server"], signal.SIGHUP)  # the master this module's stack started
    for name, page in pages.items():
        try:
            page.wait_for("document.getElementById('messages').innerText"
                          ".includes('Disconnected (1012')", CONNECT_TIMEOUT,
                          f"page {name} to see close code 1012")
            page.wait_until(f"{OPEN} && document.getElementById('chat-status').textContent",
                            lambda status: bool(status) and old_worker not in status,
                            CONNECT_TIMEOUT, f"page {name} to reconnect to a new worker")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(stack, pages)}") from None
    expected = []
    for name, page in pages.items():
        text = f"{name} is back"
        say(page, name, text)
        expected.append([name, text])
    wait_for_messages(stack, pages, expected)


def test_reload_retires_the_old_worker_by_itself(stack: Stack, browser: Browser) -> None:
    """After a reload the old worker closes its WebSockets and its idle keep-alive connections
    and exits within graceful_timeout: the master never has to kill it."""
    pages = open_chat(stack, browser, ["erin"])
    old_worker = worker_of(pages["erin"])
    log_before = len(stack.log())
    os.kill(stack.pids["server"], signal.SIGHUP)
    deadline = time.monotonic() + OVERRIDES["server"]["graceful_timeout"] + 5
    exited, killed = f"worker {old_worker} exited", f"worker {old_worker} did not stop"
    while time.monotonic() < deadline:
        log = stack.log()[log_before:]
        if exited in log or killed in log:
            break
        time.sleep(0.1)
    assert exited in log and killed not in log, tail(log)
