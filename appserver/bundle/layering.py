"""Settings layering: the base settings file, overlays, and ``APPSERVER__SECTION__KEY`` variables.

Precedence, lowest first: the base file < each overlay in the order given < environment
variables.  Tables merge key by key at every depth; any other value (a list, a string, a number)
replaces what was below it.  Nothing here knows the schema: the merged data is validated once, by
:func:`appserver.bundle.loading.validate_settings`, against the one declaration of every setting.
What this module adds is where each value came from (:class:`Origins`), so that a bad value or an
unknown key is reported against the overlay file or the variable that brought it, not the base.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appserver.bundle.loading import Loaded, read_toml, validate_settings
from appserver.bundle.settings import BundleSettings, SettingsError
from appserver.config import BUNDLE_ENV_PREFIX

# "APPSERVER__": the double underscore keeps these apart from the server's own APPSERVER_<NAME>
# variables (APPSERVER_WORKERS for `appserver serve`, which skips this prefix) and from the
# internal ones (APPSERVER_FDS, APPSERVER_PURE, APPSERVER_REDIS_URL...), none of which start so.
ENV_PREFIX = BUNDLE_ENV_PREFIX
ENV_SEPARATOR = "__"
ENVIRONMENTS_DIR = "environments"  # environments/NAME.toml beside the settings file
ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ENV_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")


@dataclass
class Origins:
    """Where each value of the merged data came from, by key path.  A path not listed takes the
    label of its longest listed prefix (a table brought whole by an overlay), else the base's."""

    base: str
    by_path: dict[tuple[str, ...], str] = field(default_factory=dict)

    def of(self, loc: Sequence[str | int]) -> str:
        keys: list[str] = []
        for part in loc:
            if not isinstance(part, str):
                break  # past a list index: the list came whole from one layer
            keys.append(part)
        for end in range(len(keys), 0, -1):
            label = self.by_path.get(tuple(keys[:end]))
            if label is not None:
                return label
        return self.base

    def set(self, path: tuple[str, ...], label: str) -> None:
        # A value replaced whole takes everything below it along.
        for key in [key for key in self.by_path if key[:len(path)] == path]:
            del self.by_path[key]
        self.by_path[path] = label


def merge_into(target: dict[str, Any], layer: Mapping[str, Any], label: str, origins: Origins,
               prefix: tuple[str, ...] = ()) -> None:
    """Deep-merge ``layer`` into ``target``: tables merge key by key, anything else replaces."""
    for key, value in layer.items():
        path = (*prefix, key)
        below = target.get(key)
        if isinstance(value, Mapping) and isinstance(below, dict):
            merge_into(below, value, label, origins, path)
        else:
            target[key] = copy.deepcopy(value)
            origins.set(path, label)


def read_overlay(path: Path) -> dict[str, Any]:
    """An overlay: TOML, and named *.toml (one written as YAML or JSON could otherwise fail with
    a puzzling TOML error, or, worse, parse)."""
    if path.suffix != ".toml":
        raise SettingsError(f"{path}: an overlay must be a TOML file named *.toml, like the "
                            f"settings file (got {path.suffix or 'no suffix'}); YAML, JSON and "
                            f"INI are not read")
    return read_toml(path, "overlay")


def env_value(text: str) -> Any:
    """A variable's value: a TOML value when the text is one (8443, true, 1.5, ["a", "b"],
    "quoted"), else the text itself (auto, 10m, 0660, example.com)."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # A newline in the text could smuggle in more keys; then it is not one TOML value.
    return parsed["value"] if len(parsed) == 1 else text


def env_layers(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """One layer per ``APPSERVER__SECTION__KEY`` variable, sorted by name: (label, data)."""
    layers = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].split(ENV_SEPARATOR)
        if len(parts) < 2 or not all(_ENV_PART.fullmatch(part) for part in parts):
            raise SettingsError(
                f"environment variable {name}: not a settings key; the form is "
                f"APPSERVER__<TABLE>__<KEY> with more __<KEY> for nested tables, e.g. "
                f"APPSERVER__NGINX__LISTEN_PORT=8443 or APPSERVER__NGINX__TLS__ENABLED=true")
        data: dict[str, Any] = {parts[-1].lower(): env_value(environ[name])}
        for part in reversed(parts[:-1]):
            data = {part.lower(): data}
        layers.append((f"environment variable {name}", data))
    return layers


def _check_tables(data: Mapping[str, Any], layer: Mapping[str, Any], label: str,
                  prefix: str = "") -> None:
    """A variable that reaches into a key which is not a table (nginx.listen_port.x) would
    replace the value below it with a table; name the variable instead."""
    for key, value in layer.items():
        below = data.get(key)
        if isinstance(value, Mapping) and below is not None and not isinstance(below, dict):
            raise SettingsError(f"{label}: {prefix}{key} = {below!r} is not a table, so it has no "
                                f"key {next(iter(value))!r}")
        if isinstance(value, Mapping) and isinstance(below, dict):
            _check_tables(below, value, label, f"{prefix}{key}.")


def environment_overlay(settings: Path, name: str) -> Path:
    """The overlay of environment ``name``: ``environments/NAME.toml`` beside the settings file."""
    if not ENV_NAME.fullmatch(name):
        raise SettingsError(f"--env {name!r}: an environment name is lowercase letters, digits, "
                            f"- and _ (it becomes the directory deploy/{name}/)")
    path = settings.parent / ENVIRONMENTS_DIR / f"{name}.toml"
    if not path.is_file():
        raise SettingsError(f"--env {name}: {path} not found; an environment is a TOML overlay "
                            f"in {ENVIRONMENTS_DIR}/ beside {settings.name} (docs/environments.md)")
    return path


def _shown(path: Path, base: Path) -> str:
    """An overlay as the generated files' header names it: relative to the project, or its
    name when it lives elsewhere (a header must not hold one machine's absolute paths)."""
    relative = os.path.relpath(path.absolute(), base.absolute().parent)
    return path.name if relative.startswith("..") else Path(relative).as_posix()


def load_layered(settings: str | Path, overlays: Sequence[str | Path] = (), *,
                 environ: Mapping[str, str] | None = None,
                 environment: str | None = None) -> Loaded:
    """Base file + the environment's overlay + ``overlays`` + variables, validated once.

    ``environ`` is where the ``APPSERVER__`` variables are read (None: none are).  Relative paths
    in every layer are relative to the base settings file, whose directory is the project's."""
    base = Path(settings)
    files = [Path(p) for p in overlays]
    if environment is not None:
        files.insert(0, environment_overlay(base, environment))
    data = read_toml(base)
    origins = Origins(str(base))
    labels: list[str] = []
    for path in files:
        merge_into(data, read_overlay(path), str(path), origins)
        labels.append(_shown(path, base))
    for label, layer in env_layers(environ or {}):
        _check_tables(data, layer, label)
        merge_into(data, layer, label, origins)
        labels.append(label.removeprefix("environment variable "))
    return validate_settings(data, base, source=origins.of, layers=tuple(labels),
                             environment=environment,
                             key_sources={".".join(path): label
                                          for path, label in origins.by_path.items()})


# A dotted settings key in a message: "nginx.listen_port", "kubernetes.resources.app.cpu".
_KEY = re.compile(rf"\b((?:{'|'.join(BundleSettings.model_fields)})(?:\.[a-z_][a-z0-9_]*)+)")


def blame(loaded: Loaded, message: str) -> str:
    """Each line of a cross-check failure, with the overlay or variable that set the keys it
    names: the checks speak of the settings file, but with layers a value may come from
    elsewhere."""
    if not loaded.key_sources:
        return message
    lines = []
    for line in message.splitlines():
        notes = []
        for key in dict.fromkeys(_KEY.findall(line)):
            parts = key.split(".")
            for end in range(len(parts), 0, -1):
                label = loaded.key_sources.get(".".join(parts[:end]))
                if label is not None:
                    notes.append(f"{key} from {label}")
                    break
        lines.append(line + (f" [{'; '.join(notes)}]" if notes else ""))
    return "\n".join(lines)
