"""gunicorn's Python config files: execute one, and sort its module-level names.

gunicorn executes the file as a module named ``__config__`` (``__file__`` set) and takes every
name that is one of its settings, ignoring the rest.  We take the same names -- ours, gunicorn's
spellings of them, and the hooks -- and, because "ignored without a word" is how misconfigured
deployments happen, look at the rest:

* a gunicorn setting we do not support: an error, or a warning when its value is gunicorn's
  default (:mod:`.unsupported`);
* a name that looks like a misspelt setting (``worker``, ``WORKERS``, ``post_forks``): a warning
  naming the right spelling;
* anything obviously private -- ``_names``, modules, classes, functions not named like a hook,
  values whose names resemble no setting -- is left alone, as gunicorn leaves it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from ..config import ALIASES, HOOK_NAMES, SETTING_NAMES, ConfigError, Layer
from . import unsupported

MODULE_NAME = "__config__"  # gunicorn's name for the config module (hooks may rely on it)
_CUTOFF = 0.8               # 'worker'/'workers' 0.92, 'bind_port'/'bind' 0.61: left alone


@dataclass
class PythonConfig:
    """What a Python config contributes: its settings as a layer, warnings and errors."""

    layer: Layer
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load(location: str) -> PythonConfig:
    """``location``: a path (``file:`` prefix allowed) or ``python:MODULE``."""
    if location.startswith("python:"):
        name = location.removeprefix("python:")
        namespace = _import_module(name)
        where = f"python:{name}"
    else:
        path = os.path.abspath(location.removeprefix("file:"))
        namespace = _exec_file(path)
        where = path
    return sort_names(namespace, where)


def _import_module(name: str) -> dict[str, Any]:
    # gunicorn imports it after putting the working directory on sys.path (its chdir step);
    # a console script does not have it there otherwise.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return vars(importlib.import_module(name))
    except Exception:
        raise ConfigError(f"-c python:{name}: importing the config module failed:\n"
                          f"{traceback.format_exc()}") from None


def _exec_file(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise ConfigError(f"{path}: config file not found")
    # Any extension is Python (gunicorn warns but executes it); .toml never reaches here.
    loader = importlib.machinery.SourceFileLoader(MODULE_NAME, path)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        loader.exec_module(module)
    except Exception:
        raise ConfigError(f"{path}: executing the config file failed:\n"
                          f"{traceback.format_exc()}") from None
    return vars(module)


def sort_names(namespace: dict[str, Any], where: str) -> PythonConfig:
    result = PythonConfig(Layer({}, {}, origin=f"file {where}"))
    known = set(SETTING_NAMES) | set(ALIASES)
    for name, value in namespace.items():
        if name in known:
            result.layer.values[name] = value
            result.layer.labels[name] = f"{where}: {name}"
        elif name in unsupported.UNSUPPORTED:
            is_error, message = unsupported.describe(name, value, where)
            (result.errors if is_error else result.warnings).append(message)
        elif name in unsupported.COMMAND_OPTIONS:
            result.warnings.append(f"{where}: {name} is read from the command line only "
                                   f"({unsupported.COMMAND_OPTIONS[name]}); ignored here")
        else:
            hint = _misspelt(name, value)
            if hint:
                result.warnings.append(f"{where}: {name} is not a setting and is ignored; did "
                                       f"you mean {hint!r}?")
    return result


def _misspelt(name: str, value: Any) -> str | None:
    """The setting ``name`` seems meant to be, or None when it looks deliberate."""
    if name.startswith("_") or inspect.ismodule(value) or inspect.isclass(value):
        return None
    lower = name.lower()
    # Helper functions are common in config files; only a hook-like name is suspicious.
    candidates = (list(HOOK_NAMES) if callable(value)
                  else [*SETTING_NAMES, *ALIASES, *unsupported.UNSUPPORTED])
    if lower in candidates:
        return lower  # WORKERS = 3: settings are lower-case
    matches = difflib.get_close_matches(lower, candidates, n=1, cutoff=_CUTOFF)
    return matches[0] if matches else None
