"""The reliability figures: every scenario of the suite records its rows here, and the suite
writes them to ``docs/reliability.md``.

Rows are kept in ``docs/reliability.json`` keyed by table and row key, so a partial run (one file,
one worker class) refreshes only its own rows and the document always shows the newest figure of
every scenario with the date it was measured.  A row recorded in this run replaces the stored
row with the same key; nothing else is touched.
"""

from __future__ import annotations

import fcntl
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / "docs" / "reliability.json"
DOC = REPO / "docs" / "reliability.md"


@dataclass(frozen=True)
class Table:
    title: str
    intro: str
    key: tuple[str, ...]          # the columns that identify a row
    columns: tuple[str, ...]      # every column, in order (the key columns among them)


TABLES: dict[str, Table] = {
    "load": Table(
        "Faults under load",
        "Continuous load through real nginx (unix-socket upstream) on loopback while the master is "
        "signalled or its workers are killed. *failed*: requests that got no complete, correct "
        "answer; *lost*: POST bodies that did not reach the app whole exactly once (checksummed "
        "by the app). A `kill -9` may fail at most the requests the killed worker had in flight.",
        ("scenario", "class"),
        ("scenario", "class", "sent", "failed", "lost", "worst latency (ms)", "notes")),
    "slow_clients": Table(
        "Slow clients",
        "Connections that trickle their request heads straight to the app server, while normal "
        "clients keep sending requests; the tricklers must be dropped after the header timeout.",
        ("scenario", "class"),
        ("scenario", "class", "tricklers", "dropped", "normal sent", "normal failed",
         "normal p99 (ms)", "worst latency (ms)")),
    "app_faults": Table(
        "App faults",
        "A misbehaving app on every worker class: the server keeps serving, and the log says what "
        "happened.",
        ("fault", "class"),
        ("fault", "class", "status seen", "served after", "log says")),
    "environment": Table(
        "Environment faults",
        "Start-up in a broken environment: a clear error, a non-zero exit, nothing half-started.",
        ("fault",),
        ("fault", "exit status", "error", "left behind")),
    "hostile": Table(
        "Hostile input",
        "Each case on a new connection, straight to the app server and through nginx; after each, "
        "a normal request on a new connection must succeed and no worker may have died.",
        ("case", "via"),
        ("case", "via", "expected", "got", "classes", "workers died")),
    "memory": Table(
        "Memory",
        "Large transfers through nginx; the worker's resident memory must stay flat.",
        ("transfer", "class"),
        ("transfer", "class", "bytes", "RSS before (MiB)", "RSS peak (MiB)", "growth (MiB)")),
    "fuzz": Table(
        "Fuzzing",
        "Property-based and coverage-guided fuzzing: no exception may escape except the "
        "documented errors.",
        ("target", "tool"),
        ("target", "tool", "inputs", "documented errors", "escaped")),
    "analyzer": Table(
        "nginx configuration analysis",
        "The rendered nginx config through the `gixy-ng` security analyzer.",
        ("settings",),
        ("settings", "analyzer", "findings")),
    "headers": Table(
        "Headers the server adds",
        "Response headers present that the app did not set (the documented ones only).",
        ("class",),
        ("class", "added headers")),
}


class Recorder:
    """Collects the rows of one test session."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}

    def record(self, table: str, **fields: Any) -> None:
        spec = TABLES[table]
        unknown = set(fields) - set(spec.columns)
        assert not unknown, f"table {table!r} has no column(s) {sorted(unknown)}"
        missing = [name for name in spec.key if name not in fields]
        assert not missing, f"table {table!r} needs the key column(s) {missing}"
        row = {name: fields.get(name, "") for name in spec.columns}
        row["measured"] = time.strftime("%Y-%m-%d")
        key = " | ".join(str(fields[name]) for name in spec.key)
        self.rows.setdefault(table, {})[key] = row

    def __bool__(self) -> bool:
        return bool(self.rows)

    def write(self, store: Path = STORE, doc: Path = DOC) -> None:
        """Merge this session's rows into ``store`` and render ``doc`` from it.  Under a lock:
        with pytest-xdist each worker process is a session of its own and writes its rows."""
        with open(store.with_name(store.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data: dict[str, dict[str, dict[str, Any]]] = json.loads(store.read_text())
            except (OSError, ValueError):
                data = {}
            for table, rows in self.rows.items():
                data.setdefault(table, {}).update(rows)
            data = {t: data[t] for t in TABLES if t in data}
            store.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            doc.write_text(render(data))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:,.1f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(data: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "# Reliability: load, faults and hostile input",
        "",
        "<!-- generated by the reliability suite (tests/reliability); do not edit. -->",
        "",
        "Every figure below is written by `tests/reliability` when it runs (it is part of "
        "`./run-tests`, so every full run refreshes it); the *measured* column dates each row. Loopback and "
        "unix sockets only, bounded counts and durations, on the development machine "
        f"({platform.machine()}, {platform.python_implementation()} {platform.python_version()}).",
        "",
    ]
    for name, spec in TABLES.items():
        rows = data.get(name)
        if not rows:
            continue
        columns = (*spec.columns, "measured")
        lines += [f"## {spec.title}", "", spec.intro, "",
                  "| " + " | ".join(columns) + " |",
                  "|" + "|".join("---" for _ in columns) + "|"]
        for key in sorted(rows):
            lines.append("| " + " | ".join(_cell(rows[key].get(c, "")) for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)
