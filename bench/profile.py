"""``--profile``: sample our server with py-spy while wrk measures it, and summarise where the
time went.

Design note: py-spy (``pip install py-spy``) attaches to the server's master by PID and follows
its workers (``--subprocesses``), sampling without pausing them (``--nonblocking``), for the
measured window only.  Threads waiting in the kernel (the event loop in epoll) count as idle
and are left out, so the samples are roughly the server's CPU time.  The raw output (one line per
distinct stack: ``frame;frame;... count``, outermost first) is kept next to the results
(``flamegraph.pl``, inferno and speedscope read it too); the summary is the top functions by
self samples (the leaf frame: where the CPU was) and by inclusive samples (the function is
anywhere on the stack).  Profiling costs CPU on a 2-core machine, so a profiled run's figures
are not comparable with an unprofiled one's: profile in a run of its own.

The flame graph (SVG) is drawn here from the merged raw stacks of all of a cell's runs: py-spy
writes one format per recording, and its own SVG cannot be merged across runs nor summarised,
while the raw stacks serve both.  Frames are named as in the summary (function and file, no line
number), and the process and thread labels are dropped, so every worker's and every run's
samples add up into one tower per code path.  It is a plain SVG: hover a box for its name,
samples and share; no script.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import zlib
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

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


def start(server_pid: int, duration_s: int, out: Path, log_path: Path, *,
          native: bool = False) -> ManagedProcess:
    """``native``: also sample C frames (py-spy ``--native``).  Our compiled build's hot modules
    are C extensions (mypyc), whose time py-spy otherwise charges to the calling Python frame;
    with it they show by name.  py-spy cannot unwind native stacks without pausing the process,
    so this drops ``--nonblocking``: each sample stops the server for a moment."""
    exe = available()
    assert exe is not None  # checked before the run
    argv = [exe, "record", "--pid", str(server_pid), "--subprocesses",
            *(["--native"] if native else ["--nonblocking"]),
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


def stacks(raw: Path) -> list[tuple[list[str], int]]:
    """The raw file's stacks as (frames outermost first, samples), frames named by
    ``_frame_name``, without py-spy's process and thread labels."""
    found = []
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        # The first frames are "process NNN:..." and "thread (0x...)" labels; the rest are
        # Python frames, outermost first.
        frames = [_frame_name(f) for f in match["stack"].split(";")
                  if not f.startswith(("process ", "thread "))]
        if frames:
            found.append((frames, int(match["count"])))
    return found


def summarise(raw: Path, top: int = 15) -> str:
    """The top functions by self and by inclusive samples, as text."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for frames, count in stacks(raw):
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


# ---------------------------------------------------------------------------------------------
# The flame graph.

_WIDTH = 1200        # px of the whole graph
_ROW = 17            # px per stack level
_MIN_BOX = 0.3       # px: narrower boxes are left out (their samples stay in their parents)
_CHAR = 6.6          # px per character of the 11 px label font, roughly


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Node] = {}


def flamegraph_svg(raw: Path, title: str = "") -> str:
    """A flame graph of the raw stacks as a standalone SVG: the root at the bottom, each box as
    wide as its samples, children above their caller, siblings sorted by name."""
    root = _Node()
    for frames, count in stacks(raw):
        root.count += count
        node = root
        for name in frames:
            node = node.children.setdefault(name, _Node())
            node.count += count
    total = root.count or 1
    boxes: list[tuple[int, float, float, str, _Node]] = []  # depth, x, width, name, node

    def place(node: _Node, depth: int, x: float) -> None:
        for name in sorted(node.children):
            child = node.children[name]
            width = _WIDTH * child.count / total
            if width >= _MIN_BOX:
                boxes.append((depth, x, width, name, child))
                place(child, depth + 1, x)
            x += width

    boxes.append((0, 0.0, float(_WIDTH), "all", root))
    place(root, 1, 0.0)
    depth = max(d for d, *_ in boxes) + 1
    top = 40  # room for the title
    height = top + depth * _ROW + 10
    heading = f"{title}: " if title else ""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH + 20}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           '<rect width="100%" height="100%" fill="#f8f8f8"/>',
           f'<text x="10" y="20" font-size="14">{escape(heading)}{root.count} samples '
           f'({RATE}/s per process) from {escape(raw.name)}</text>']
    for level, x, width, name, node in boxes:
        y = top + (depth - 1 - level) * _ROW
        self_count = node.count - sum(c.count for c in node.children.values())
        tip = (f"{name}: {node.count} samples ({100 * node.count / total:.2f}%), "
               f"self {self_count} ({100 * self_count / total:.2f}%)")
        out.append(f'<g><title>{escape(tip)}</title><rect x="{10 + x:.1f}" y="{y}" '
                   f'width="{width:.1f}" height="{_ROW - 1}" fill={quoteattr(_colour(name))} '
                   f'rx="2"/>')
        chars = int((width - 4) / _CHAR)
        if chars >= 3:
            label = name if len(name) <= chars else name[:chars - 2] + ".."
            out.append(f'<text x="{12 + x:.1f}" y="{y + _ROW - 5}">{escape(label)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _colour(name: str) -> str:
    """A warm colour fixed by the name, so a function has the same colour in every graph."""
    h = zlib.crc32(name.encode())
    return f"rgb({205 + h % 50},{80 + (h >> 8) % 130},{30 + (h >> 16) % 50})"
