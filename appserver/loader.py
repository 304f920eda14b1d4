"""Import the WSGI app named ``MODULE:CALLABLE`` or ``MODULE:factory(args)``."""

from __future__ import annotations

import ast
import importlib
import os
import sys
from typing import Any

from .config import ServerConfig


class AppLoadError(Exception):
    """The app cannot be imported or is not callable; the message says why."""


def prepare_import_path(config: ServerConfig) -> None:
    if config.chdir:
        os.chdir(config.chdir)
    for path in reversed((config.pythonpath or "").split(",")):
        if path.strip() and path.strip() not in sys.path:
            sys.path.insert(0, path.strip())
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    call_args: tuple[list[Any], dict[str, Any]] | None = None
    if attr.endswith(")") and "(" in attr:
        attr, _, arg_text = attr.partition("(")
        call_args = _parse_args(spec, arg_text[:-1])
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"{spec}: no module named {exc.name!r} "
                               f"(working directory {os.getcwd()}; see --chdir/--pythonpath)") from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"{spec}: module {module_name!r} has no attribute {attr!r}") from None
    if call_args is not None:
        args, kwargs = call_args
        obj = obj(*args, **kwargs)
    if not callable(obj):
        raise AppLoadError(f"{spec}: {attr!r} is not callable (got {type(obj).__name__})")
    return obj


def _parse_args(spec: str, text: str) -> tuple[list[Any], dict[str, Any]]:
    """Literal arguments only: ``factory()``, ``factory('prod', debug=False)``."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        assert isinstance(call, ast.Call)
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except (SyntaxError, ValueError, AssertionError):
        raise AppLoadError(f"{spec}: factory arguments must be Python literals") from None
    return args, kwargs
