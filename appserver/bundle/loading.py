"""Loading a settings file: TOML, validation, and errors that name file, key path, value and
what is allowed (the field's description)."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from appserver.bundle.settings import (
    COMPUTED_SERVER_KEYS,
    AppSettings,
    BundleSettings,
    ComposeSettings,
    NginxSettings,
    SecurityHeaders,
    SettingsError,
    TlsSettings,
    interface_problems,
)
from appserver.bundle.settings_kubernetes import KubernetesSettings
from appserver.bundle.settings_metrics import MetricsSettings
from appserver.bundle.settings_systemd import SystemdSettings
from appserver.config import ServerConfig

RUN_DIR_NAME = ".appserver"


class Loaded(BaseModel):
    """Validated settings with the file they came from (paths in them are relative to it)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: BundleSettings
    path: Path
    # Overlays (as shown to users) and APPSERVER__ variables applied over the file, in order;
    # the environment (``--env``) they were chosen for.  See appserver.bundle.layering.
    layers: tuple[str, ...] = ()
    environment: str | None = None
    # Dotted key (or table) -> the overlay or variable that set it; keys of the file are absent.
    key_sources: dict[str, str] = {}

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def run_dir(self) -> Path:
        """Where ``appserver up`` puts its configs, socket, logs and pid files by default: a
        hidden directory beside the settings file (not ``run/``: a project -- this one -- may
        have a file of that name)."""
        return self.directory / RUN_DIR_NAME

    @property
    def generated_from(self) -> str:
        """The generated files' header: what they were rendered from and how to render again."""
        sources = " + ".join([self.path.name, *self.layers])
        command = f"appserver render --env {self.environment}" if self.environment else \
            "appserver render"
        return f"generated from {sources}; do not edit (run `{command}`)"

    @property
    def explicit_server_keys(self) -> frozenset[str]:
        return frozenset(self.settings.server.model_fields_set)


def load_settings(path: str | Path) -> Loaded:
    """Read and validate a settings file; raise :class:`SettingsError` naming every problem."""
    path = Path(path)
    return validate_settings(read_toml(path), path)


def read_toml(path: Path, what: str = "settings file") -> dict[str, Any]:
    """The file's tables, or :class:`SettingsError` naming it (``what``: settings file, overlay)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


Source = Callable[[Sequence[str | int]], str]  # key path -> the file or variable it came from


def validate_settings(data: dict[str, Any], path: Path, *, source: Source | None = None,
                      layers: tuple[str, ...] = (), environment: str | None = None,
                      key_sources: dict[str, str] | None = None) -> Loaded:
    """Validate ``data`` (read from ``path``; with layers, ``source`` names the overlay file or
    variable each key came from, for the errors)."""
    where = source or (lambda loc: str(path))
    problems = []
    server = data.get("server", {})
    if isinstance(server, dict):
        for key, why in COMPUTED_SERVER_KEYS.items():
            if key in server:
                problems.append(f"{where(('server', key))}: server.{key} = {server[key]!r}: not "
                                f"allowed here; {why}")
    try:
        settings = BundleSettings.model_validate(data)
    except ValidationError as exc:
        problems.extend(describe_errors(exc, data, path, where))
    else:
        problems.extend(interface_problems(settings, frozenset(settings.server.model_fields_set),
                                           where(("server", "worker_class"))))
    if problems:
        raise SettingsError("\n".join(problems))
    return Loaded(settings=settings, path=path.absolute(), layers=layers, environment=environment,
                  key_sources=key_sources or {})


def describe_errors(exc: ValidationError, data: dict[str, Any], path: Path,
                    source: Source | None = None) -> list[str]:
    """One line per error: file (or variable), dotted key path, value, what went wrong and what
    is allowed."""
    lines = []
    for err in exc.errors():
        loc = [part for part in err["loc"] if isinstance(part, str | int)]
        origin = source(loc) if source else str(path)
        key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]
        model, field_name = _field_for(loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields) if model else ""
            guess = difflib.get_close_matches(str(loc[-1]), list(model.model_fields) if model else [], 1)
            hint = f"; did you mean {guess[0]!r}?" if guess else ""
            lines.append(f"{origin}: {key} = {err['input']!r}: unknown key{hint} "
                         f"(allowed in [{'.'.join(map(str, loc[:-1]))}]: {allowed})")
            continue
        described = model.model_fields[field_name].description if model and field_name else None
        allowed = f" (allowed: {described})" if described else ""
        if err["type"] == "missing":
            lines.append(f"{origin}: {key}: missing{allowed}")
            continue
        value = _lookup(data, loc)
        lines.append(f"{origin}: {key} = {value!r}: {message}{allowed}")
    return lines


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    "server": ServerConfig, "app": AppSettings, "nginx": NginxSettings, "compose": ComposeSettings,
    "metrics": MetricsSettings, "kubernetes": KubernetesSettings,
    "systemd": SystemdSettings,
}
_NESTED_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("nginx", "security_headers"): SecurityHeaders, ("nginx", "tls"): TlsSettings,
}


def _field_for(loc: list[str | int]) -> tuple[type[BaseModel] | None, str | None]:
    """The model holding the field at ``loc``, and the field's name (None past a list index)."""
    if not loc:
        return BundleSettings, None
    if len(loc) == 1:
        name = str(loc[0])
        return BundleSettings, name if name in BundleSettings.model_fields else None
    model = _SECTION_MODELS.get(str(loc[0]))
    rest = loc[1:]
    if len(rest) >= 2 and (str(loc[0]), str(rest[0])) in _NESTED_MODELS:
        model = _NESTED_MODELS[(str(loc[0]), str(rest[0]))]
        rest = rest[1:]
    # Deeper tables (kubernetes.resources.app): follow the fields whose type is a model.
    while model is not None and len(rest) >= 2:
        field = model.model_fields.get(str(rest[0]))
        inner = field.annotation if field else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            break
        model, rest = inner, rest[1:]
    if model is None:
        return None, None
    name = str(rest[0])
    return model, name if name in model.model_fields else None


def _lookup(data: Any, loc: list[str | int]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return "(not set)"
    return data
