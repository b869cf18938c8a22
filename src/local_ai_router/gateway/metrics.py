"""Prometheus metrics, with the names the original system's dashboards read.

Each app owns its own ``CollectorRegistry`` (no global state), so several apps
can live in one process (tests) without clashing.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["Metrics"]

_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "local_ai_requests",
            "Gateway requests",
            ["endpoint", "model", "provider", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "local_ai_request_duration_seconds",
            "Request duration",
            ["endpoint", "provider"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("local_ai_tokens", "Tokens", ["provider", "type"], registry=r)
        self.health = Gauge(
            "local_ai_provider_health", "1 healthy, 0 not", ["provider"], registry=r
        )
        self.active = Gauge(
            "local_ai_active_requests", "In-flight requests", ["provider"], registry=r
        )
        self.routing = Counter(
            "local_ai_routing_decisions", "Routing decisions", ["decision", "provider"], registry=r
        )
        self.failover = Counter(
            "local_ai_failover",
            "Fallbacks to another backend",
            ["from_provider", "to_provider"],
            registry=r,
        )
        self.errors = Counter("local_ai_errors", "Errors by type", ["type"], registry=r)
        self.queue_depth = Gauge("local_ai_queue_depth", "Requests waiting for a slot", registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus_client validates the values and
        takes a lock on every ``labels`` call, several times per request. The registry keeps
        every child anyway, so this holds nothing it does not."""
        key = (id(metric), values)
        try:
            return self._children[key]
        except KeyError:
            child = self._children[key] = metric.labels(*values)
            return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
