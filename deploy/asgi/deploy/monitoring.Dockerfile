# generated from settings.asgi.toml; do not edit (run `appserver render`)
# The compose stack's optional monitoring (`docker compose --profile monitoring up`): Debian's
# Prometheus, with this deployment's scrape configuration and alert rules baked in, and Debian's
# prometheus-nginx-exporter, which turns nginx's stub_status into metrics.  One image serves the
# two services; both run as the package's non-root user prometheus.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus prometheus-nginx-exporter \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/asgi/deploy/prometheus.yml /etc/prometheus/prometheus.yml
COPY deploy/asgi/deploy/alerts.yml /etc/prometheus/alerts.yml
USER prometheus
WORKDIR /var/lib/prometheus
CMD ["prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/var/lib/prometheus/metrics2", "--web.listen-address=0.0.0.0:9090"]
