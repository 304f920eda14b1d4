"""Test helpers that boot the real server (and, with the bundle, real nginx) as processes.

``AppServerProcess`` runs ``appserver serve``; ``start_stack`` (in :mod:`appserver.testing.stack`,
imported on first use because it loads the bundle) runs nginx in front of it; the pytest plugin
:mod:`appserver.testing.plugin` wraps ``start_stack`` in fixtures.
"""

from typing import Any

from .server import AppServerProcess, free_port, free_ports

__all__ = ["AppServerProcess", "Stack", "StackError", "free_port", "free_ports", "start_stack"]


def __getattr__(name: str) -> Any:
    if name in ("Stack", "StackError", "start_stack"):
        from . import stack

        return getattr(stack, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
