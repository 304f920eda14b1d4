"""``[redis]`` of the bundle's settings file (see :mod:`appserver.bundle.settings`): the Redis
that :mod:`appserver.broadcast` fans WebSocket rooms out through (docs/broadcast.md).

``mode`` says where it is: ``off`` (no Redis: a room reaches one worker process), ``local``
(the bundle runs one: ``appserver up`` starts Debian's redis-server in its run directory, and
compose a ``redis`` service on the internal network), or ``url`` (one you run; ``url`` names
it).  Either way the app server's environment gets its URL as ``APPSERVER_REDIS_URL``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from appserver.bundle.values import Size, Strict

URL_SCHEMES = ("redis://", "rediss://", "unix://")
ENV_VAR = "APPSERVER_REDIS_URL"  # what appserver.broadcast.Broadcast.from_environ reads
COMPOSE_URL = "redis://redis:6379/0"  # the compose service, on the internal network


class RedisSettings(BaseModel):
    model_config = Strict

    mode: Literal["off", "local", "url"] = Field(
        "off", description='"off" (no Redis: a broadcast room reaches the clients of one worker '
        'process), "local" (the bundle runs redis-server: `appserver up` in its run directory, '
        'compose as the redis service) or "url" (a Redis you run, at redis.url)')
    url: str | None = Field(
        None, description='with mode = "url": redis://[:PASSWORD@]HOST:PORT/DB, rediss://... '
        "(TLS) or unix:///PATH; the app server gets it as APPSERVER_REDIS_URL")
    image: str = Field("appserver-redis:latest", description="the redis service's image, built "
                       "from deploy/redis.Dockerfile (Debian's redis-server), with mode = "
                       '"local" in compose')
    memory: Size = Field(128 << 20, ge=1 << 22, description="memory limit of the redis container (mode = "
                         '"local" in compose), e.g. "128m"')
    cpus: float = Field(0.5, gt=0, le=64, description="CPU limit of the redis container")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(URL_SCHEMES):
            raise ValueError(f"{value!r} is not a Redis URL: start it with "
                             f"{', '.join(URL_SCHEMES)} (e.g. \"redis://redis.internal:6379/0\")")
        return value

    @model_validator(mode="after")
    def _url_matches_mode(self) -> RedisSettings:
        if self.mode == "url" and not self.url:
            raise ValueError('redis.mode = "url" needs redis.url, e.g. '
                             'url = "redis://redis.internal:6379/0"; or set mode = "local" to '
                             "have the bundle run redis-server")
        if self.mode != "url" and self.url:
            raise ValueError(f'redis.url = {self.url!r} is set but redis.mode = "{self.mode}" '
                             'ignores it: set mode = "url" to use it, or remove url')
        return self

    @property
    def enabled(self) -> bool:
        return self.mode != "off"
