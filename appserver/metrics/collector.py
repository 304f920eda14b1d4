"""The Prometheus exposition: a custom collector over the master's view of its workers.

Every value is read when scraped: the live workers' maps (plain loads, nothing asked of the
workers) plus the totals folded from ended workers (:mod:`.totals`), /proc for the workers'
RSS, the listening sockets for their queues (:mod:`.listenq`).  prometheus_client renders the
text (and OpenMetrics when the scraper asks for it); its ProcessCollector adds ``process_*`` for
the master.  Metric names and labels: docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib import metadata
from operator import add
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from . import listenq
from .shm import (
    BINS,
    BUCKETS,
    CLASSES,
    COUNTER_SLOTS,
    DURATION_SUM,
    METHODS,
    PARSE,
    PARSE_ERRORS,
    REQUEST_BYTES,
    REQUESTS,
    RESPONSE_BYTES,
    STATUS_CLASSES,
    WS_RECEIVED,
    WS_SENT,
)
from .status import rss_of
from .totals import RESTART_REASONS

if TYPE_CHECKING:
    from ..arbiter import WorkerRecord
    from .master import MasterMetrics

_POSITION = {slot: index for index, slot in enumerate(COUNTER_SLOTS)}


def _version() -> str:
    try:
        return metadata.version("appserver")
    except metadata.PackageNotFoundError:
        return "unknown"


class AppServerCollector(Collector):
    def __init__(self, metrics: MasterMetrics) -> None:
        self.metrics = metrics
        self.version = _version()

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        arbiter = metrics.arbiter
        totals = metrics.totals
        with totals.lock:
            workers = list(arbiter.workers.values())
            sums = list(totals.folded)
            in_flight = websockets = 0
            for worker in workers:
                counters = worker.counters
                if counters is None:
                    continue
                sums = list(map(add, sums, counters.snapshot()))  # (C-level: a scrape is cheap)
                in_flight += counters.in_flight()
                websockets += counters.websockets_open()
            restarts = dict(totals.restarts)

        def total(slot: int) -> float:
            return sums[_POSITION[slot]]

        joint = sums[_POSITION[REQUESTS]:]
        requests = CounterMetricFamily("appserver_requests", "Requests answered, by method and "
                                       "status class.", labels=["method", "status"])
        bins = [0.0] * BINS
        for m, method in enumerate(METHODS):
            for c in range(CLASSES):
                cell = joint[(m * CLASSES + c) * BINS:(m * CLASSES + c + 1) * BINS]
                bins = list(map(add, bins, cell))
                if c < len(STATUS_CLASSES):
                    requests.add_metric([method, STATUS_CLASSES[c]], sum(cell))
        yield requests
        cumulative, buckets = 0.0, []
        for index, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += bins[index]
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily("appserver_request_duration_seconds",
                                    "Time from the request head to the end of the response.",
                                    buckets=buckets, sum_value=total(DURATION_SUM))
        yield GaugeMetricFamily("appserver_requests_in_flight", "Requests being served now.",
                                value=in_flight)
        yield CounterMetricFamily("appserver_request_body_bytes", "Request body bytes "
                                  "(as declared by Content-Length).", value=total(REQUEST_BYTES))
        yield CounterMetricFamily("appserver_response_body_bytes", "Response body bytes sent.",
                                  value=total(RESPONSE_BYTES))
        parse = CounterMetricFamily("appserver_parse_errors", "Requests refused by the server's "
                                    "own error response, by status.", labels=["status"])
        for index, code in enumerate(PARSE_ERRORS):
            parse.add_metric([str(code)], total(PARSE + index))
        yield parse
        yield from self._workers(workers, restarts)
        yield GaugeMetricFamily("appserver_websockets_open", "WebSockets open now.",
                                value=websockets)
        messages = CounterMetricFamily("appserver_websocket_messages", "WebSocket messages, by "
                                       "direction.", labels=["direction"])
        messages.add_metric(["received"], total(WS_RECEIVED))
        messages.add_metric(["sent"], total(WS_SENT))
        yield messages
        queue = GaugeMetricFamily("appserver_listen_queue", "Connections waiting in a listening "
                                  "socket's accept queue.", labels=["listener"])
        for listener in list(arbiter.listeners):
            length = listenq.queue_length(listener.sock)
            if length is not None:
                queue.add_metric([str(listener)], length)
        yield queue
        info = GaugeMetricFamily("appserver_build_info", "The server's version and worker class "
                                 "(always 1).", labels=["version", "worker_class"])
        config = arbiter.config
        worker_class = "asgi" if config.interface == "asgi" else config.effective_worker_class
        info.add_metric([self.version, worker_class], 1)
        yield info

    def _workers(self, workers: list[WorkerRecord], restarts: dict[str, int]) -> Iterator[Metric]:
        states = {"booting": 0, "running": 0, "stopping": 0}
        memory = GaugeMetricFamily("appserver_worker_memory_bytes", "Resident memory of each "
                                   "worker (RSS).", labels=["worker"])
        for worker in workers:
            pid = worker.pid
            if worker.retiring_since is not None:
                states["stopping"] += 1
            elif worker.heartbeat.booted:
                states["running"] += 1
            else:
                states["booting"] += 1
            rss = rss_of(pid)
            if rss:
                memory.add_metric([str(pid)], rss)
        gauge = GaugeMetricFamily("appserver_workers", "Workers, by state.", labels=["state"])
        for state, count in states.items():
            gauge.add_metric([state], count)
        yield gauge
        yield memory
        restart = CounterMetricFamily("appserver_worker_restarts", "Workers replaced, by the "
                                      "reason they ended.", labels=["reason"])
        for reason in RESTART_REASONS:
            restart.add_metric([reason], restarts.get(reason, 0))
        yield restart


_registries: dict[int, CollectorRegistry] = {}


def exposition(metrics: MasterMetrics, accept: str) -> tuple[bytes, str]:
    """The body and content type of one scrape."""
    registry = _registries.get(id(metrics))
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AppServerCollector(metrics))
        ProcessCollector(registry=registry)
        _registries[id(metrics)] = registry
    encoder, content_type = choose_encoder(accept)
    started = time.perf_counter()
    body = encoder(registry)
    metrics.last_scrape_seconds = time.perf_counter() - started
    return body, content_type
