"""Prometheus metrics of the API: requests, latency, cache hits, WebSocket clients."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ApiMetrics"]

_LATENCY_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ApiMetrics:
    """The API's own registry (exposed at /metrics with the platform's provider metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "qv_api_requests", "API requests by route and status", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "qv_api_request_seconds", "API request latency by route", ["route"],
            buckets=_LATENCY_S, registry=self.registry,
        )  # fmt: skip
        self.cache = Counter(
            "qv_api_cache", "response cache lookups by outcome (hit_l1, hit_l2, miss)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.ws_clients = Gauge(
            "qv_api_websocket_clients", "connected WebSocket clients", registry=self.registry
        )
        self.ws_dropped = Counter(
            "qv_api_websocket_dropped", "WebSocket clients dropped, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
