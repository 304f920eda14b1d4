"""The server suite's fixtures (a short work directory, a launcher that stops what it started)."""

from __future__ import annotations

from tests.server.conftest import launcher, workdir

__all__ = ["launcher", "workdir"]
