"""Prometheus metrics of the API: requests, latency, cache hits, WebSocket clients."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

__all__ = ["ApiMetrics"]

_LATENCY_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH = 256  # requests counted together
_BATCH_S = 1.0  # at most this long while requests keep coming


class _Flush:
    """A collector without metrics, registered first: a read of the registry (a scrape,
    the alerting loop) counts the pending requests before it reads the metrics."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        self.metrics.flush()
        return iter(())


class ApiMetrics:
    """The API's own registry (exposed at /metrics with the platform's provider metrics).

    Requests and L1 cache hits are counted in batches (`served`, `hit`): updating labelled
    Prometheus metrics costs more than the rest of a cached answer. Every read of the
    registry sees them all.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Flush(self))
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
        # deques: appends and pops are atomic, so the event loop and a scrape's thread
        # can add and flush at once without a lock
        self._served: deque[tuple[str, int, float]] = deque()
        self._hits: deque[None] = deque()
        self._flushed_at = time.perf_counter()
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def served(self, route: str, status: int, seconds: float, now: float) -> None:
        """Count a request of `route` answered with `status` in `seconds`; `now` is
        `time.perf_counter()` (the batch is flushed every 256 requests or every second)."""
        self._served.append((route, status, seconds))
        if len(self._served) >= _BATCH or now - self._flushed_at > _BATCH_S:
            self.flush()

    def hit(self) -> None:
        """Count a response found in the in-process cache (with the next batch)."""
        self._hits.append(None)

    def flush(self) -> None:
        """Count the pending requests and cache hits in the Prometheus metrics."""
        self._flushed_at = time.perf_counter()
        served, hits = self._served, self._hits
        while served:
            try:
                route, status, seconds = served.popleft()
            except IndexError:  # another thread took the last one
                break
            children = self._children.get((route, status))
            if children is None:
                children = self._children[(route, status)] = (
                    self.requests.labels(route, str(status)),
                    self.latency.labels(route),
                )
            children[0].inc()
            children[1].observe(seconds)
        count = 0
        while hits:
            try:
                hits.popleft()
            except IndexError:
                break
            count += 1
        if count:
            self.cache.labels("hit_l1").inc(count)
