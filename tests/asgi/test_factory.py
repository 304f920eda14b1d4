"""App factories and signatures under ``-k asgi`` (tests/asgi/sendasgi.py): an async factory
called in the app spec ('sendasgi:create_app()', gunicorn's MODULE:factory() form) is awaited
once in the worker's loop; named without the call it is a start-up error that gives the spec to
use, as are a plain def factory without the call and an async def that cannot take (scope,
receive, send).  A factory that raises stops the server as an app that fails to import."""

from __future__ import annotations

from typing import Any

import pytest

from appserver.asgi import app_kind_error
from tests.server.harness import Launcher

from . import sendasgi
from .conftest import ENV

FAST = ["--timeout", "5", "--graceful-timeout", "3"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_async_factory_called_in_the_spec_is_awaited(launcher: Launcher, loop: str) -> None:
    server = launcher.start("-k", "asgi", "--loop", loop, *FAST, app="sendasgi:create_app()",
                            workers=1, env=ENV)
    for _ in range(3):
        reply = server.get("/")
        assert reply.status == 200
        assert reply.body == b"made by the factory, same loop: True"


def test_a_plain_factory_called_in_the_spec(launcher: Launcher) -> None:
    server = launcher.start("-k", "asgi", *FAST, app="sendasgi:make_app()", workers=1, env=ENV)
    assert server.get("/extensions").status == 200


@pytest.mark.parametrize(("app", "message"), [
    ("sendasgi:create_app", "call it in the app spec, 'sendasgi:create_app()'"),
    ("sendasgi:make_app", "call it in the app spec, 'sendasgi:make_app()'"),
    ("sendasgi:one_argument", "cannot be called as app(scope, receive, send)"),
    ("sendasgi:failing_factory()", "the ASGI app factory sendasgi:failing_factory() failed"),
])
def test_a_wrong_app_is_a_start_up_error(launcher: Launcher, app: str, message: str) -> None:
    server = launcher.start("-k", "asgi", *FAST, app=app, workers=1, env=ENV, wait=False)
    assert server.wait_exit(15) == 4
    log = server.log()
    assert message in log, log
    assert "booted" not in log


def test_the_factory_error_names_the_spec() -> None:
    assert "'tests.asgi.sendasgi:create_app()'" in app_kind_error(sendasgi.create_app, "asgi")
    assert app_kind_error(sendasgi.app, "asgi") == ""

    class NoArguments:
        async def __call__(self) -> None:
            pass

    class Wrapped:
        async def __call__(self, *args: Any, **kwargs: Any) -> None:
            pass

    assert "cannot be called as app(scope, receive, send)" in \
        app_kind_error(NoArguments(), "asgi")  # an object's __call__() is no factory
    assert app_kind_error(Wrapped(), "asgi") == ""
    assert "is an ASGI app" in app_kind_error(sendasgi.create_app, "wsgi")
