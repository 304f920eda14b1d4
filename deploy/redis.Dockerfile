# generated from settings.toml; do not edit (run `appserver render`)
# Redis for the broadcast rooms ([redis] mode = "local"): Debian's redis-server, run as the
# package's non-root user redis.  Its append-only file lives on the volume at /data; nothing is
# snapshotted (--save "").  It listens on every address of the container, but the container is
# on the compose network "redis" alone, which is internal and publishes nothing, so only the app
# reaches it; protected mode (which refuses non-loopback clients when no password is set) is
# therefore off.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
USER redis
WORKDIR /data
STOPSIGNAL SIGTERM
CMD ["redis-server", "--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no", "--dir", "/data", "--appendonly", "yes", "--save", ""]
