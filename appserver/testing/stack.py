"""The real stack for a test: nginx and the app server as processes, from rendered configs.

:func:`start_stack` builds the bundle's settings for a WSGI app (from a settings file, from
overrides, or both), starts :class:`~appserver.bundle.localstack.LocalStack` on free loopback
ports with its configs, socket and logs in a run directory, and returns a :class:`Stack` with the
base URL.  :meth:`Stack.stop` stops nginx (graceful SIGQUIT), then the server (graceful SIGTERM),
escalating to SIGKILL past bounded waits, and then checks that no process of either is left.

Design note (processes).  LocalStack starts each master as the leader of its own session, so a
master's process group holds exactly it and its workers; after the stop, the harness looks for
any live (non-zombie) member of either group and reports it as a :class:`StackError` rather than
leave it running.  Settings are validated as if they sat in ``directory`` (relative paths such
as ``app.directory`` and ``nginx.static_dir`` are relative to it), but nothing is written there:
every generated file goes to the run directory.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from appserver.bundle.layering import Origins, merge_into
from appserver.bundle.loading import Loaded, validate_settings
from appserver.bundle.localstack import LocalStack, StackError
from appserver.bundle.settings import SettingsError
from appserver.testing.server import free_ports

__all__ = ["Stack", "StackError", "Stopped", "load_stack_settings", "start_stack"]

START_ATTEMPTS = 3  # a free port can be taken by another process before nginx binds it
SURVIVOR_WAIT = 5.0  # seconds for killed processes to vanish from /proc


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``: tables merge key by key, everything else replaces (the
    settings layers' rule, :func:`appserver.bundle.layering.merge_into`)."""
    out = copy.deepcopy(dict(base))
    merge_into(out, overrides, "overrides", Origins("base"))
    return out


def load_stack_settings(app: str | None = None, *, settings: Mapping[str, Any] | None = None,
                        settings_file: str | os.PathLike[str] | None = None,
                        directory: str | os.PathLike[str] | None = None) -> Loaded:
    """The bundle settings for a test stack.

    ``settings_file`` (a bundle settings file, e.g. the project's ``settings.toml``) is the base;
    without one the base serves ``app`` with the defaults and no static files.  ``app``
    (``MODULE:CALLABLE``) replaces ``app.module``; ``settings`` are overrides in the file's shape
    (``{"server": {"workers": 2}, "nginx": {"client_max_body_size": "1m"}}``), merged table by
    table.  Relative paths are relative to ``directory`` (default: the settings file's directory,
    else the current one).  Listening stays on 127.0.0.1 unless the overrides say otherwise.
    With ``[metrics]`` on, its listeners get free loopback ports too (unless the overrides name
    them), so that stacks from one settings file can run side by side.
    """
    if settings_file is not None:
        path = Path(settings_file).absolute()
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: cannot read the settings file: {exc}") from None
        base_dir = Path(directory).absolute() if directory is not None else path.parent
        label = base_dir / path.name
    else:
        if app is None:
            raise SettingsError("start_stack: give the WSGI app (app='package.module:app') or a "
                                "settings file (settings_file='settings.toml')")
        data = {"nginx": {"static_dir": ""}}
        base_dir = Path(directory).absolute() if directory is not None else Path.cwd()
        label = base_dir / "appserver-stack.toml"  # named in error messages; never written
    data = merge(data, {"compose": {"publish_address": "127.0.0.1"}})
    if app is not None:
        data = merge(data, {"app": {"module": app}})
    metrics_on = False
    for table in (data.get("metrics"), (settings or {}).get("metrics")):
        if isinstance(table, Mapping) and "enabled" in table:  # else validation speaks below
            metrics_on = table["enabled"] is True
    if metrics_on:
        bind, status, exporter = free_ports(3)
        data = merge(data, {"metrics": {"bind": f"127.0.0.1:{bind}",
                                        "nginx_status_port": status,
                                        "nginx_exporter_port": exporter}})
    data = merge(data, settings or {})
    loaded = validate_settings(data, label)
    static = loaded.settings.nginx.static_dir
    if static and not (base_dir / static).is_dir():
        raise SettingsError(f"{label}: nginx.static_dir = {static!r}: no such directory "
                            f"({base_dir / static})")
    return loaded


@dataclass(frozen=True)
class Stopped:
    """How the stack ended: each master's exit status (0: a graceful stop)."""

    server_status: int | None
    nginx_status: int | None

    @property
    def graceful(self) -> bool:
        return self.server_status == 0 and self.nginx_status == 0


class Stack:
    """A running nginx + app server; ``url`` is the base URL (``http://127.0.0.1:PORT``)."""

    def __init__(self, local: LocalStack, *, owns_run_dir: bool = False) -> None:
        self.local = local
        self.url = local.url
        self.stopped: Stopped | None = None
        # start_stack made the run directory (no run_dir given): the context manager removes it
        # after a clean stop, so a test suite leaves no directory per stack in the temp dir.
        self.owns_run_dir = owns_run_dir

    @property
    def loaded(self) -> Loaded:
        return self.local.loaded

    @property
    def run_dir(self) -> Path:
        return self.local.run_dir

    @property
    def socket_path(self) -> str:
        assert self.local.plan is not None
        return self.local.plan.socket_path

    @property
    def https_url(self) -> str | None:
        """``https://127.0.0.1:PORT`` when nginx.tls is enabled, else None."""
        plan = self.local.plan
        if plan is None or not self.loaded.settings.nginx.tls.enabled:
            return None
        return f"https://{plan.https_listens[0]}"

    @property
    def pids(self) -> dict[str, int]:
        """The masters' process ids: ``{"server": ..., "nginx": ...}``, and ``"exporter"`` when
        prometheus-nginx-exporter runs ([metrics] on)."""
        return {name: proc.pid for name, proc in (("server", self.local.server),
                                                  ("nginx", self.local.nginx),
                                                  ("exporter", self.local.exporter)) if proc}

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    def log(self, name: str = "appserver.log") -> str:
        """A log from the run directory: ``appserver.log`` (the server's output),
        ``nginx-error.log``, ``nginx-access.log``."""
        path = self.run_dir / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop(self) -> Stopped:
        """Stop both, gracefully first; raise :class:`StackError` if any process survived."""
        if self.stopped is not None:
            return self.stopped
        groups = dict(self.pids)
        self.local.stop()
        server, nginx = self.local.server, self.local.nginx
        self.stopped = Stopped(server.returncode if server else None,
                               nginx.returncode if nginx else None)
        survivors = _survivors(groups)
        if survivors:
            for pid in survivors:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise StackError(f"processes left after the stack stopped (killed now): {survivors}")
        return self.stopped

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop; then remove the run directory start_stack made, unless something failed, in
        which case its logs are kept and the exception says where."""
        try:
            self.stop()
        except BaseException as stop_error:
            self._keep_logs(stop_error)
            raise
        if exc is not None:
            self._keep_logs(exc)
        elif self.owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _keep_logs(self, exc: BaseException) -> None:
        if self.owns_run_dir:
            exc.add_note(f"the stack's configs and logs are kept in {self.run_dir}")


def start_stack(app: str | None = None, *, settings: Mapping[str, Any] | None = None,
                settings_file: str | os.PathLike[str] | None = None,
                directory: str | os.PathLike[str] | None = None,
                run_dir: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> Stack:
    """Start nginx and the app server for ``app``; see :func:`load_stack_settings` for the
    arguments.  Returns once the app answers ``app.health_path`` with a 200 over the socket (or,
    when the settings name no health path, answers at all) and nginx accepts connections; raises
    :class:`StackError` with the logs' last lines otherwise.  Use the result as a context
    manager, or call ``stop()``.  Without ``run_dir`` the configs and logs go to a new temporary
    directory, which the context manager removes after a clean stop and keeps (named in the
    exception's notes) when the block raised or a process outlived the stop."""
    loaded = load_stack_settings(app, settings=settings, settings_file=settings_file,
                                 directory=directory)
    owns_run_dir = run_dir is None
    run = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="appserver-stack-"))
    for attempt in range(1, START_ATTEMPTS + 1):
        port, tls_port = free_ports(2)
        local = LocalStack(loaded, run, port=port, tls_port=tls_port,
                           wait_healthy="health_path" in loaded.settings.app.model_fields_set)
        try:
            local.start(timeout=timeout)
        except StackError as exc:
            if attempt < START_ATTEMPTS and "Address already in use" in str(exc):
                continue
            if owns_run_dir:
                exc.add_note(f"the stack's configs and logs are kept in {run}")
            raise
        return Stack(local, owns_run_dir=owns_run_dir)
    raise AssertionError("unreachable")


def _survivors(groups: Mapping[str, int]) -> list[int]:
    """Live processes in the masters' process groups, after a bounded wait."""
    deadline = time.monotonic() + SURVIVOR_WAIT
    while True:
        alive = [pid for pgid in groups.values() for pid in _group_members(pgid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    """Non-zombie processes whose process group is ``pgid`` (Linux /proc; elsewhere, a probe
    of the group as a whole)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members
