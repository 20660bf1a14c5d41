"""The service's Prometheus metrics, in a registry of its own (one per app, so tests can build many).
Labels are route templates, methods, statuses, stages and reasons: never a user id, key or header."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hms_http_requests", "HTTP requests by route template, method and status", ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram(
            "hms_http_request_duration_seconds", "HTTP request latency by route template", ("route", "method"), buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.stages = Histogram("hms_context_stage_seconds", "Time of each context assembly stage", ("stage",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.appended = Counter("hms_events_appended", "Events committed to the event store by the service", registry=self.registry)
        self.rejected = Counter("hms_rejected_requests", "Requests refused, by reason", ("reason",), registry=self.registry)
        self.index_age = Gauge("hms_index_age_seconds", "Seconds since the context indexes were loaded", registry=self.registry)
        self.events_since_index = Gauge("hms_events_since_index", "Events stored after the memories the indexes were built from", registry=self.registry)

    def watch_indexes(self, age: Callable[[], float], behind: Callable[[], float]) -> None:
        self.index_age.set_function(age)
        self.events_since_index.set_function(behind)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(stage).observe(ms / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
