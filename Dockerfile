# generated from settings.toml; do not edit (run `appserver render`)
# The app server's image: Debian's Python in a virtualenv, the app, the rendered server config;
# it runs as the non-root user app (uid 10001), a member of www-data so the socket
# it creates can belong to nginx's group.
FROM debian:bookworm-slim AS build
# A C compiler and Python's headers: pip compiles the server's request hot path with mypyc
# (APPSERVER_COMPILE=1: a failed compile fails the build; this stage is not shipped).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
ENV APPSERVER_COMPILE=1
COPY . /src
WORKDIR /src
# Packages come from ./wheelhouse when it holds wheels (offline builds, or where containers
# cannot reach the index: on the host, `pip wheel -w wheelhouse . && pip download -d wheelhouse
# setuptools`), else from the package index.
RUN python3 -m venv /opt/venv \
 && if ls wheelhouse/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-cache-dir --no-index --find-links wheelhouse . 'redis>=5'; \
    else \
        /opt/venv/bin/pip install --no-cache-dir . 'redis>=5'; \
    fi \
 && rm -rf /src/wheelhouse

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --groups www-data \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app \
 && install -d -o app -g www-data -m 0750 /run/appserver
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/. /srv/app
COPY deploy/appserver.toml /etc/appserver/appserver.toml
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER app
WORKDIR /srv/app
STOPSIGNAL SIGTERM
CMD ["appserver", "serve", "--settings", "/etc/appserver/appserver.toml"]
