"""The green classes' fast path (pump.GreenIO): the kernel socket under the library's green one,
and the library's hub to wait on it.  A library release that renamed its internals would make
``raw()`` return None, and the pump would fall back to the green socket's slower calls without a
word: these tests say so instead.  Each runs in a fresh interpreter, monkey-patched as a worker is (after the
worker's modules are imported).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    from {module} import {cls}  # first, as in a worker: the pump binds the unpatched poll
    {patch}
    import select, socket, time
    io = {cls}()
    listener = socket.socket()  # a connection accepted as the worker accepts it
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    b = socket.create_connection(listener.getsockname())
    a, _ = listener.accept()
    a.setblocking(True)  # as the eventlet worker leaves it
    a.settimeout(30)  # as the pump leaves a green socket
    raw = io.raw(a)
    assert raw is not None, "no kernel socket under the green one"
    assert raw.gettimeout() == 0.0 and raw.fileno() == a.fileno()
    # Nothing to read: the wait ends with TimeoutError after its timeout, in the hub.
    started = time.monotonic()
    try:
        io.wait(raw, select.POLLIN, 0.2)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait returned with nothing to read")
    assert 0.15 < time.monotonic() - started < 5
    # Bytes sent by a green thread while this one waits: the wait ends, the read gets them.
    {spawn}(lambda: (time.sleep(0.05), b.sendall(b"ping")))
    io.wait(raw, select.POLLIN, 5)
    assert raw.recv(16, socket.MSG_DONTWAIT) == b"ping"
    io.wait(raw, select.POLLOUT, 5)  # room to write: at once
    print("ok")
""")

LIBRARIES = {
    "gevent": dict(patch="from gevent import monkey; monkey.patch_all()",
                   module="appserver.workers.gevent_worker", cls="GeventIO",
                   spawn="__import__('gevent').spawn"),
    "eventlet": dict(patch="import eventlet; eventlet.monkey_patch()",
                     module="appserver.workers.eventlet_worker", cls="EventletIO",
                     spawn="__import__('eventlet').spawn"),
}


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_the_kernel_socket_and_the_hubs_wait(library: str) -> None:
    if importlib.util.find_spec(library) is None:  # (never imported here: eventlet warns on forks)
        pytest.skip(f"{library} is not installed")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", CHECK.format(**LIBRARIES[library])],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
