"""Prometheus metrics of the service: requests by route and status, latency, queue depth."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds; from a small image on the fast path to a large multi-scale test.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROUTES = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/segment")


class Metrics:
    """One registry per application, so tests and several apps never share counts."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pspnet_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pspnet_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.segmented = Counter(
            "pspnet_images_segmented", "Images the model segmented", registry=self.registry
        )
        self.dropped = Counter(
            "pspnet_requests_dropped",
            "Queued requests whose client left before they ran (never segmented)",
            registry=self.registry,
        )
        self.stopped = Counter(
            "pspnet_requests_stopped",
            "Requests stopped while being segmented: their deadline passed, their client left "
            "or the service stopped",
            registry=self.registry,
        )
        self.queue = Gauge("pspnet_queue_depth", "Requests waiting", registry=self.registry)
        self.in_flight = Gauge(
            "pspnet_in_flight", "Requests being segmented", registry=self.registry
        )

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "/static" if path.startswith("/static") else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def set_queue(self, waiting: int, running: int) -> None:
        self.queue.set(waiting)
        self.in_flight.set(running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
