"""The status view: the master's data for ``appserver status`` (built in the master from the
same maps the metrics read) and its rendering as a table (in the client)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .master import MasterMetrics

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_of(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def status_data(metrics: MasterMetrics) -> dict[str, Any]:
    """Everything ``appserver status --json`` prints (built in the master, from any thread)."""
    arbiter = metrics.arbiter
    totals = metrics.totals
    now, wall = time.monotonic(), time.time()
    rows = []
    with totals.lock:
        workers = sorted(arbiter.workers.values(), key=lambda w: w.spawned_at)
        for worker in workers:
            counters = worker.counters
            current = counters.current() if counters is not None else None
            if worker.retiring_since is not None:
                state = "stopping"
            else:
                state = "running" if worker.heartbeat.booted else "booting"
            rows.append({
                "pid": worker.pid,
                "generation": worker.generation,
                "spawn": worker.age,
                "age_seconds": round(now - worker.spawned_at, 3),
                "state": state,
                "requests": worker.heartbeat.requests(),
                "in_flight": counters.in_flight() if counters is not None else None,
                "current": None if current is None else {
                    "method": current[0], "path": current[1],
                    "seconds": round(max(0.0, now - current[2]), 3)},
                "rss_bytes": rss_of(worker.pid),
                "websockets_open": counters.websockets_open() if counters is not None else None,
            })
        recent = [{"at": r.at, "pid": r.pid, "generation": r.generation, "reason": r.reason,
                   "message": r.message} for r in totals.recent]
        restarts = dict(totals.restarts)
    config = arbiter.config
    return {
        "master": {
            "pid": arbiter.pid,
            "uptime_seconds": round(wall - totals.started_at, 3),
            "started_at": totals.started_at,
            "worker_class": "asgi" if config.interface == "asgi" else config.effective_worker_class,
            "generation": arbiter.generation,
            "workers_wanted": arbiter.num_workers,
            "listeners": [str(listener) for listener in arbiter.listeners],
        },
        "workers": rows,
        "restarts_total": restarts,
        "recent_restarts": recent,
    }


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}M" if size else "-"


def render(data: dict[str, Any]) -> str:
    """The table ``appserver status`` prints."""
    master = data["master"]
    lines = [f"master {master['pid']}  up {_duration(master['uptime_seconds'])}  "
             f"{master['worker_class']}  generation {master['generation']}  "
             f"{len(data['workers'])} workers ({master['workers_wanted']} wanted)  "
             f"{', '.join(master['listeners'])}", ""]
    header = ("PID", "GEN", "AGE", "STATE", "REQUESTS", "RSS", "WS", "CURRENT REQUEST")
    table = [header]
    for row in data["workers"]:
        current = row["current"]
        table.append((
            str(row["pid"]), str(row["generation"]), _duration(row["age_seconds"]), row["state"],
            str(row["requests"]), _mib(row["rss_bytes"]),
            "-" if row["websockets_open"] is None else str(row["websockets_open"]),
            "-" if current is None else
            f"{current['method']} {current['path']} for {_duration(current['seconds'])}",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for row_text in table:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row_text[:-1], widths, strict=True))
                     + "  " + row_text[-1])
    restarts = data["recent_restarts"]
    totals = ", ".join(f"{k} {v}" for k, v in sorted(data["restarts_total"].items()))
    lines += ["", f"restarts: {totals or 'none'}"]
    for item in restarts[-10:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["at"]))
        lines.append(f"  {when}  {item['pid']}  {item['reason']}: {item['message']}")
    return "\n".join(lines)
