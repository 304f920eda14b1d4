"""Apps whose lifespan startup fails, one per framework with a lifespan (Django's ASGI handler
has none), for tests/asgi/test_through_nginx.py: the server must refuse to start with the app's
message instead of respawning workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from quart import Quart
from starlette.applications import Starlette


@asynccontextmanager
async def _unreachable(app: Any) -> AsyncIterator[None]:
    raise RuntimeError(f"the database is unreachable ({type(app).__name__})")
    yield


starlette_app = Starlette(lifespan=_unreachable)
fastapi_app = FastAPI(lifespan=_unreachable)
quart_app = Quart(__name__)


@quart_app.before_serving
async def _quart_unreachable() -> None:
    raise RuntimeError("the database is unreachable (Quart)")
