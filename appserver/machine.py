"""Facts about the machine that settings' defaults depend on: usable CPUs, a tmpfs."""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpu_count() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    """The container's CPU quota in cores (cgroup v2 ``cpu.max`` or v1 cfs files), if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def default_workers() -> int:
    return 2 * usable_cpu_count() + 1


def default_heartbeat_dir() -> str | None:
    """A tmpfs when there is one (gunicorn #1194: a disk-backed heartbeat stalls in Docker)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None  # the system temp dir
