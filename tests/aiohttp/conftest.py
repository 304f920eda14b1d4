"""The aiohttp class's tests use the server suite's fixtures (a short work dir, a launcher)."""

from tests.server.conftest import launcher, workdir

__all__ = ["launcher", "workdir"]
