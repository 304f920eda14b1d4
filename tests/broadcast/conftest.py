"""A real redis-server per test, on a unix socket in the test's tmp directory (bounded start,
stopped by its PID).  Without redis-server the Redis tests skip, saying what to install; in CI
(``CI=true``) they fail instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appserver.bundle.redisproc import REDIS_INSTALL_HINT, RedisServer, find_redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if find_redis() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {REDIS_INSTALL_HINT}", pytrace=False)
        pytest.skip(REDIS_INSTALL_HINT)
    # A short directory: a unix socket path holds at most 107 bytes.
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
