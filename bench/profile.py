"""``--profile``: sample our server with py-spy while wrk measures it, and summarise where the
time went.

Design note: py-spy (``pip install py-spy``) attaches to the server's master by PID and follows
its workers (``--subprocesses``), sampling without pausing them (``--nonblocking``), for the
measured window only.  Threads waiting in the kernel (the event loop in epoll) count as idle
and are left out, so the samples are roughly the server's CPU time.  The raw output (one line per
distinct stack: ``frame;frame;... count``, outermost first) is kept next to the results, for
a flame graph (``flamegraph.pl`` or speedscope read it); the summary is the top functions by
self samples (the leaf frame: where the CPU was) and by inclusive samples (the function is
anywhere on the stack).  Profiling costs CPU on a 2-core machine, so a profiled run's figures
are not comparable with an unprofiled one's: profile in a run of its own.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from bench.procs import ManagedProcess

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
RATE = 200  # samples per second per process
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
# "func (path/to/file.py:123)" -> "func (file.py)"; the line number is dropped so that a
# function's samples add up.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")


def available() -> str | None:
    """The py-spy executable, or None."""
    if Path(PY_SPY).exists():
        return PY_SPY
    return shutil.which("py-spy")


def start(server_pid: int, duration_s: int, out: Path, log_path: Path) -> ManagedProcess:
    exe = available()
    assert exe is not None  # checked before the run
    argv = [exe, "record", "--pid", str(server_pid), "--subprocesses", "--nonblocking",
            "--rate", str(RATE), "--duration", str(duration_s), "--format", "raw",
            "--output", str(out)]
    # SIGINT makes py-spy stop early and still write what it has.
    return ManagedProcess(f"py-spy {server_pid}", argv, log_path=log_path,
                          stop_signal=signal.SIGINT)


def finish(spy: ManagedProcess, duration_s: int) -> None:
    """Let py-spy end on its own (it stops after the duration), bounded; then stop it."""
    try:
        spy.popen.wait(duration_s + 15)
    except Exception:  # noqa: BLE001 - TimeoutExpired; stop() below handles the rest
        pass
    spy.stop(timeout=10)


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({Path(match['file']).name})"


def summarise(raw: Path, top: int = 15) -> str:
    """The top functions by self and by inclusive samples, as text."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match["count"])
        # The first frames are "process NNN:..." and "thread (0x...)" labels; the rest are
        # Python frames, outermost first.
        frames = [_frame_name(f) for f in match["stack"].split(";")
                  if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            incl_counts[name] += count
    if not total:
        return f"no samples in {raw}"
    out = [f"{total} samples ({RATE}/s per process) from {raw.name}", "",
           "self %   function (where the CPU was)"]
    out += [f"{100 * n / total:5.1f}   {name}" for name, n in self_counts.most_common(top)]
    out += ["", "incl %   function (on the stack)"]
    out += [f"{100 * n / total:5.1f}   {name}" for name, n in incl_counts.most_common(top)]
    return "\n".join(out)
