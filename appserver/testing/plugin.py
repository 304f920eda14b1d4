"""pytest plugin: the real stack (nginx + app server) for a WSGI app, in a fixture.

Installed with the package (entry point ``pytest11``), so any project that installs appserver
gets these fixtures:

``appserver_stack``
    A factory, ``appserver_stack(app=None, *, settings=None, settings_file=None,
    directory=None, timeout=30.0)``, returning a started :class:`~appserver.testing.stack.Stack`
    (``.url`` is the base URL); every stack it started is stopped when the test ends, and the
    test errors if a process of it was left running.

``appserver_stack_factory``
    The same factory, session-scoped: for a stack shared by a module or a session, started from
    a fixture of that scope and stopped with ``with`` (or ``.stop()``); anything still running
    is stopped when the session ends.

Defaults come from the ini file (``pytest.ini``, or ``[tool.pytest.ini_options]``):
``appserver_settings`` (a bundle settings file, relative to the rootdir) and ``appserver_app``
(``MODULE:CALLABLE``).  Relative paths in the settings are relative to the settings file, or to
the rootdir when there is none.  Run directories (configs, socket, logs) go under pytest's
temporary directory.

The bundle (pydantic, Jinja) is imported only when a fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from appserver.testing.stack import Stack

INI_SETTINGS = "appserver_settings"
INI_APP = "appserver_app"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_SETTINGS, "appserver_stack: the bundle settings file (relative to the "
                  "rootdir) used when a test gives none", default="")
    parser.addini(INI_APP, "appserver_stack: the WSGI app (MODULE:CALLABLE) used when a test "
                  "gives none", default="")


class StackFactory:
    """Starts stacks with the ini defaults and stops every one it started."""

    def __init__(self, config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.rootdir = Path(config.rootpath)
        self.default_settings = str(config.getini(INI_SETTINGS) or "")
        self.default_app = str(config.getini(INI_APP) or "")
        self.tmp_path_factory = tmp_path_factory
        self.started: list[Stack] = []

    def __call__(self, app: str | None = None, *, settings: Mapping[str, Any] | None = None,
                 settings_file: str | os.PathLike[str] | None = None,
                 directory: str | os.PathLike[str] | None = None,
                 timeout: float = 30.0) -> Stack:
        from appserver.testing.stack import start_stack

        if settings_file is None and self.default_settings:
            settings_file = self.rootdir / self.default_settings
        if app is None and self.default_app:
            app = self.default_app
        if settings_file is None and directory is None:
            directory = self.rootdir
        run_dir = self.tmp_path_factory.mktemp("appserver-stack")
        stack = start_stack(app, settings=settings, settings_file=settings_file,
                            directory=directory, run_dir=run_dir, timeout=timeout)
        self.started.append(stack)
        return stack

    def stop_all(self) -> None:
        """Stop every stack (each one even when another fails); raise the first failure."""
        errors = []
        for stack in reversed(self.started):
            try:
                stack.stop()
            except Exception as exc:  # stop the others too, then report the first
                errors.append(exc)
        self.started.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def appserver_stack(pytestconfig: pytest.Config,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Start the real stack (nginx + app server) for a WSGI app; stopped after the test."""
    factory = StackFactory(pytestconfig, tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def appserver_stack_factory(pytestconfig: pytest.Config,
                            tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """``appserver_stack`` for fixtures of any scope; stacks live until stopped or the session
    ends."""
    factory = StackFactory(pytestconfig, tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()
