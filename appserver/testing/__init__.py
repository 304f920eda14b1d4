"""Test helpers that boot the real server (and, with the bundle, real nginx) as processes."""

from .server import AppServerProcess, free_port

__all__ = ["AppServerProcess", "free_port"]
