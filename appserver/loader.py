"""Import the WSGI app named ``MODULE:CALLABLE`` or ``MODULE:factory(args)``, or load it from a
PasteDeploy config file (``--paste FILE.ini[#NAME]``, gunicorn's setting; PasteDeploy is the
optional ``paste`` extra, imported only then).

gunicorn's ``--paste`` reads only the ini's app section (and its logging sections, which
become the default ``logconfig``: see the config); ``[server:main]`` counts only when
PasteDeploy runs gunicorn (``pserve``), so here too the server settings come from the command
line and config files, never the ini.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import sys
from typing import Any

from .config import ServerConfig

PASTE_EXTRA = "pip install 'appserver[paste]' (or PasteDeploy)"


class AppLoadError(Exception):
    """The app cannot be imported or is not callable; the message says why."""


def app_name(config: ServerConfig) -> str:
    """How the configured app is named in messages."""
    return f"--paste {config.paste}" if config.paste else str(config.wsgi_app)


def load_wsgi_app(config: ServerConfig) -> Any:
    """The configured app: from the PasteDeploy file when ``paste`` is set (it wins over
    MODULE:CALLABLE, as in gunicorn), else imported by name."""
    if config.paste:
        return load_paste_app(config.paste, paste_global_conf(config.raw_paste_global_conf))
    if not config.wsgi_app:
        raise AppLoadError("no app given: pass MODULE:CALLABLE or --paste FILE.ini")
    return load_app(config.wsgi_app)


def check_paste(config: ServerConfig) -> None:
    """Fail at start-up, not in every worker, when --paste is set without PasteDeploy."""
    if config.paste:
        _paste_loadapp()


def _paste_loadapp() -> Any:
    try:
        from paste.deploy import loadapp
    except ImportError:
        raise AppLoadError(f"--paste needs PasteDeploy, which is not installed: "
                           f"{PASTE_EXTRA}") from None
    return loadapp


def paste_global_conf(items: list[str]) -> dict[str, str]:
    """``--paste-global KEY=VALUE`` items as a dict; ``\\=`` is a literal "=" (gunicorn's rule)."""
    result = {}
    for item in items:
        key, value = re.split(r"(?<!\\)=", item, maxsplit=1)
        result[key.replace("\\=", "=")] = value.replace("\\=", "=")
    return result


def load_paste_app(uri: str, global_conf: dict[str, str] | None = None) -> Any:
    """The WSGI app of ``FILE.ini`` (its [app:main]) or ``FILE.ini#NAME`` (its [app:NAME],
    or a pipeline or composite of that name), as PasteDeploy builds it."""
    loadapp = _paste_loadapp()
    try:
        app = loadapp(f"config:{uri}", relative_to=os.getcwd(), global_conf=global_conf or None)
    except LookupError as exc:  # no such section, or an unknown egg/entry point
        raise AppLoadError(f"--paste {uri}: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"--paste {uri}: the app is not callable (got {type(app).__name__})")
    return app


def prepare_import_path(config: ServerConfig) -> None:
    if config.chdir:
        os.chdir(config.chdir)
    for item in reversed((config.pythonpath or "").split(",")):
        path = os.path.abspath(item.strip()) if item.strip() else ""
        if path and path not in sys.path:
            sys.path.insert(0, path)
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
    # A coroutine: an async def factory called in the spec (``make_app()``), for -k aiohttp.
    if not callable(obj) and not inspect.iscoroutine(obj):
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
