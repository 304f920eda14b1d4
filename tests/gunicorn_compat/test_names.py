"""Every gunicorn 27 setting (``gunicorn.config.KNOWN_SETTINGS``) is accounted for: one of ours
(same name or an alias declared on our field), a hook, an option of the command, or in the one
table of settings not supported yet -- never nothing."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]
from pydantic import ValidationError

from appserver.compat.unsupported import COMMAND_OPTIONS, UNSUPPORTED
from appserver.config import ALIASES, HOOK_NAMES, SETTING_NAMES, ServerConfig, gunicorn_name

GUNICORN = {setting.name: setting for setting in KNOWN_SETTINGS}


def test_every_gunicorn_setting_is_accounted_for() -> None:
    ours = {gunicorn_name(name) for name in SETTING_NAMES} - {None}
    missing = set(GUNICORN) - ours - set(UNSUPPORTED) - set(COMMAND_OPTIONS)
    assert not missing


def test_declared_gunicorn_names_exist_and_ours_only_are_marked() -> None:
    for name in SETTING_NAMES:
        theirs = gunicorn_name(name)
        if theirs is None:
            assert name not in GUNICORN, f"{name}: gunicorn has it; drop gunicorn=False"
        else:
            assert theirs in GUNICORN, f"{name}: gunicorn 27 has no {theirs!r}"
    assert ALIASES == {"keepalive": "keep_alive", "asgi_loop": "asyncio_loop"}


def test_the_unsupported_table_holds_no_supported_setting() -> None:
    """When a setting becomes supported, its row must leave the table (this fails until then)."""
    assert not set(UNSUPPORTED) & set(SETTING_NAMES)
    assert not set(UNSUPPORTED) - set(GUNICORN)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_rows_carry_gunicorn_flags_and_default(name: str) -> None:
    entry, setting = UNSUPPORTED[name], GUNICORN[name]
    assert entry.flags == tuple(setting.cli or ())
    default: Any = setting.default
    if name in ("user", "group", "control_socket"):  # computed from the running process
        assert entry.default is None
    elif not callable(default):
        assert entry.default == default
    if getattr(setting, "action", None) in ("store_true", "store_const"):
        assert entry.const is not None


@pytest.mark.parametrize("name", [n for n in SETTING_NAMES if gunicorn_name(n)])
def test_our_flags_include_gunicorns(name: str) -> None:
    extra = ServerConfig.model_fields[name].json_schema_extra
    assert isinstance(extra, dict)
    flags = extra["cli"]
    assert isinstance(flags, list)
    theirs = GUNICORN[gunicorn_name(name) or name].cli or []
    assert set(theirs) <= set(flags)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_arities_are_gunicorns(name: str) -> None:
    """A hook with the arity we accept passes gunicorn's own validator."""
    extra = ServerConfig.model_fields[name].json_schema_extra
    assert isinstance(extra, dict) and isinstance(extra["hook_arity"], list)
    for arity in extra["hook_arity"]:
        assert isinstance(arity, int)
        params = ", ".join(f"a{i}" for i in range(arity))
        namespace: dict[str, Any] = {}
        exec(f"def hook({params}):\n    pass\n", namespace)
        GUNICORN[name].validator(namespace["hook"])
        ServerConfig.model_validate({name: namespace["hook"]})


@pytest.mark.parametrize("given", ["sync", "gthread", "gevent", "eventlet", "tornado", *sorted(
    {name for name in __import__("gunicorn.workers", fromlist=["x"]).SUPPORTED_WORKERS.values()}
    - {"gunicorn.workers.gasgi.ASGIWorker"}), "gevent_wsgi", "egg:gunicorn#gthread"])
def test_gunicorn_worker_class_names_are_ours(given: str) -> None:
    """Every class gunicorn 27 ships (SUPPORTED_WORKERS' names and dotted paths) but its ASGI
    worker is accepted, as the class of ours that does the same."""
    chosen = ServerConfig(worker_class=given).worker_class
    expected = {"ThreadWorker": "gthread", "SyncWorker": "sync", "TornadoWorker": "tornado"}.get(
        given.rsplit(".", 1)[-1], "gevent" if "gevent" in given.lower() else given.split("#")[-1])
    assert chosen == expected


@pytest.mark.parametrize("given", [
    "asgi", "gunicorn.workers.gasgi.ASGIWorker", "egg:gunicorn#asgi",
    "uvicorn.workers.UvicornWorker", "uvicorn.workers.UvicornH11Worker",
    "uvicorn_worker.UvicornWorker",
])
def test_asgi_worker_names_are_the_asyncio_class_serving_asgi(given: str) -> None:
    config = ServerConfig(worker_class=given)
    assert (config.worker_class, config.interface) == ("asyncio", "asgi")


def test_other_worker_classes_are_refused_with_advice() -> None:
    with pytest.raises(ValidationError, match="is not a worker class"):
        ServerConfig(worker_class="mypkg.MyWorker")


def test_asgi_interface_needs_the_asyncio_class() -> None:
    with pytest.raises(ValidationError, match="needs the asyncio worker class"):
        ServerConfig(worker_class="gthread", interface="asgi")
    with pytest.raises(ValidationError, match="serves ASGI apps"):
        ServerConfig(worker_class="asgi", interface="wsgi")
    assert ServerConfig(worker_class="asyncio", interface="asgi").interface == "asgi"


def test_log_level_in_any_case() -> None:
    assert ServerConfig(loglevel="INFO").loglevel == "info"
    assert ServerConfig(loglevel="Warning").loglevel == "warning"
    with pytest.raises(ValidationError):
        ServerConfig(loglevel="verbose")
