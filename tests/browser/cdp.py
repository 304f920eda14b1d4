"""A small driver for headless Chromium over the DevTools protocol (CDP), stdlib only.

Chromium is started with ``--remote-debugging-pipe``: it reads commands from its file descriptor
3 and writes replies and events to descriptor 4, as JSON texts each ended by a NUL byte.  No
WebDriver binary, no WebSocket client and no Python package is needed: Debian's ``chromium``
package is the whole dependency.

Design notes
------------
* One thread, no event loop: :meth:`Browser.call` writes a command and reads until the reply
  with its id arrives, dropping the events it passes (pages are watched by polling
  ``Runtime.evaluate`` instead, which keeps every wait explicit and bounded).
* Descriptors 3 and 4 must exist in the browser under those numbers.  A tiny Python trampoline
  moves the two pipe ends there and then ``exec``\\ s the browser, so nothing runs between fork and
  exec in this (possibly threaded) test process.
* Every read has a deadline; :meth:`Browser.close` asks the browser to quit, waits a bounded
  time, then kills the process group it started (Chromium's helpers live in it).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The flags that make Debian's chromium work headless here: no sandbox (root, containers), no
# GPU, no QUIC, and no background traffic (first-run pages, component updates, sync).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]
# In the child: put the pipe ends on descriptors 3 and 4, then become the browser.
TRAMPOLINE = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); "
              "os.dup2(w, 4); os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
CALL_TIMEOUT = 15.0
POLL_INTERVAL = 0.05


class CDPError(RuntimeError):
    """The browser answered a command with an error, broke the pipe, or did not answer in time."""


def _high_fd(fd: int) -> int:
    """A close-on-exec copy of ``fd`` numbered 10 or above, so that it can never be 3 or 4."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """A headless Chromium process; use :meth:`launch` and close it (or use ``with``)."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int,
                 log_path: Path) -> None:
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self._buffer = b""
        self._next_id = 0
        self.log_path = log_path

    @classmethod
    def launch(cls, binary: str, profile_dir: Path, log_path: Path) -> Browser:
        """Start ``binary`` with a fresh profile in ``profile_dir``; its stderr goes to
        ``log_path``."""
        child_reads, we_write = os.pipe()
        we_read, child_writes = os.pipe()
        child_reads, child_writes = _high_fd(child_reads), _high_fd(child_writes)
        argv = [sys.executable, "-c", TRAMPOLINE, str(child_reads), str(child_writes), binary,
                *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=(child_reads, child_writes), start_new_session=True)
        os.close(child_reads)
        os.close(child_writes)
        browser = cls(proc, we_write, we_read, log_path)
        try:
            browser.call("Browser.getVersion")  # answers once the browser is up
        except BaseException:
            browser.close()
            raise
        return browser

    # ---- the protocol -------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """Send one command and return its result."""
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._out, data):]
        except OSError as exc:
            raise CDPError(f"{method}: the browser is gone ({exc}){self._log_tail()}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline, method)
            if reply.get("id") != ident:
                continue  # an event, or the reply to an abandoned command
            if "error" in reply:
                raise CDPError(f"{method}: {reply['error'].get('message', reply['error'])}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    def _read(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"{method}: no answer from the browser in time")
            ready, _, _ = select.select([self._in], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise CDPError(f"{method}: the browser closed the pipe{self._log_tail()}")
            self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(text)
        return message

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-10:]
        except OSError:
            return ""
        return "; browser log:\n" + "\n".join(lines) if lines else ""

    # ---- pages --------------------------------------------------------------------------------

    def new_page(self) -> Page:
        """A tab in a browser context of its own (its own cookies and storage: another user)."""
        context = self.call("Target.createBrowserContext")["browserContextId"]
        target = self.call("Target.createTarget", {"url": "about:blank",
                                                   "browserContextId": context})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Runtime.enable")
        return page

    def close(self) -> None:
        """Quit the browser; past a bounded wait, kill the process group it leads."""
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except CDPError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers left behind, if any
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass
        self._out = self._in = -1

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One tab, driven through its session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session)

    def goto(self, url: str, timeout: float = 15.0) -> None:
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"cannot load {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout, f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript error in {expression!r}: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll until ``expression`` is truthy; its value, or AssertionError naming ``what``."""
        return self.wait_until(expression, bool, timeout, what)

    def wait_until(self, expression: str, accept: Callable[[Any], bool], timeout: float,
                   what: str) -> Any:
        """Poll ``expression`` until ``accept(value)``; the value, or AssertionError naming
        ``what`` and the last value seen."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if accept(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g}s for {what}; last seen: {value!r}")
            time.sleep(POLL_INTERVAL)

    def fill(self, selector: str, text: str) -> None:
        """Focus a field, select what it holds and type ``text`` over it (real input events)."""
        self.evaluate(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
                      f"el.focus(); el.select(); }})()")
        self.call("Input.insertText", {"text": text})

    def press_enter(self) -> None:
        """Enter in the focused field: a form's implicit submission, as a person would."""
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **key})
