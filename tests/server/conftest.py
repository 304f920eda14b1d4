"""Fixtures of the server tests: a short work directory and a launcher that stops every server
it started."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Gunicorn, Launcher


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short, because a unix socket path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="am-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def launcher(workdir: Path) -> Iterator[Launcher]:
    launcher = Launcher(workdir)
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture
def gunicorn(workdir: Path) -> Iterator[Gunicorn]:
    runner = Gunicorn(workdir)
    try:
        yield runner
    finally:
        runner.close()
