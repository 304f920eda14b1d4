"""``[systemd]`` of the bundle's settings file (see :mod:`appserver.bundle.settings`): where the
project, its virtualenv and the server config live on a plain server run by systemd, and the
units' own values.  :mod:`appserver.bundle.systemd` turns them into deploy/systemd/ (the
.socket and .service units, sysusers.d, tmpfiles.d, an nginx site and the server config);
docs/deploy-systemd.md shows how to install them.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from appserver.bundle.values import PLAIN, Strict

USER_NAME = r"[a-z_][a-z0-9_-]{0,30}"


def _absolute(value: str) -> str:
    if not value.startswith("/") or not PLAIN.fullmatch(value) or "%" in value:
        raise ValueError(f"{value!r} must be an absolute path without whitespace, quotes, % or "
                         f";{{}}$#")
    return posixpath.normpath(value)


AbsolutePath = Annotated[str, Field(min_length=2)]


class SystemdSettings(BaseModel):
    model_config = Strict

    user: str = Field("appserver", pattern=USER_NAME, description="the system user (and its "
                      "group) the server runs as, created by the sysusers.d file")
    nginx_user: str = Field("www-data", pattern=USER_NAME, description="the user of nginx's "
                            "workers on the host (Debian: www-data); its group owns the socket "
                            "unless server.socket_group says otherwise")
    project_dir: str = Field(
        "/srv/appserver", description="absolute path where this project (the settings file's "
        "directory) is installed on the host; app.directory and nginx.static_dir are read "
        "below it")
    venv: str = Field("/srv/appserver/.venv", description="absolute path of the virtualenv that "
                      "holds appserver and the app (ExecStart runs its bin/appserver)")
    config_dir: str = Field("/etc/appserver", description="absolute path of the directory the "
                            "rendered server config (appserver.toml) is installed in")
    runtime_dir: str = Field("/run/appserver", description="absolute path of the directory of "
                             "the unix socket (held by the .socket unit) and the control "
                             "socket; created by the tmpfiles.d file")
    read_write_paths: list[AbsolutePath] = Field(
        [], description="more absolute paths the service may write (ProtectSystem=strict makes "
        "everything else read-only; the runtime directory is always writable), e.g. an upload "
        "directory")
    timeout_stop_sec: int | None = Field(
        None, ge=1, le=3600, description="seconds systemd waits after SIGTERM (the server's "
        "graceful stop) before SIGKILL, 1-3600 (TimeoutStopSec=); unset: server.graceful_timeout "
        "+ 5")
    watchdog_sec: int = Field(
        30, ge=0, le=3600, description="WatchdogSec=: systemd restarts a master that sent no "
        "WATCHDOG=1 for this many seconds (it sends one every half interval), 0-3600; 0: off")
    restart: Literal["no", "on-failure", "on-abnormal", "always"] = Field(
        "on-failure", description="Restart= of the service: no, on-failure, on-abnormal, always")

    @field_validator("project_dir", "venv", "config_dir", "runtime_dir")
    @classmethod
    def _path(cls, value: str) -> str:
        return _absolute(value)

    @field_validator("read_write_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [_absolute(item) for item in value]

    @field_validator("watchdog_sec")
    @classmethod
    def _watchdog(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 second leaves the master no slack (it pings every half "
                             "interval from a loop that may be busy for a moment); use 0 (off) "
                             "or at least 2")
        return value
