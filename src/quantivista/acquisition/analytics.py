"""Provider analytics: calls, errors by kind, latency, quota and breaker transitions.

Metrics are prometheus-client objects in a private `CollectorRegistry` (`analytics.registry`),
so an HTTP endpoint can expose them later with `prometheus_client.generate_latest`. The
same numbers are kept as plain data for `snapshot()` (a polars frame) and `as_dict()`.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from quantivista.acquisition.breaker import Breakers, Transition
    from quantivista.acquisition.limits import RateLimiter

__all__ = ["LATENCY_BUCKETS_S", "ProviderAnalytics", "ProviderStats"]

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SNAPSHOT_SCHEMA = {
    "provider": pl.String,
    "calls": pl.Int64,
    "ok": pl.Int64,
    "errors": pl.Int64,
    "errors_by_kind": pl.String,
    "latency_p50_s": pl.Float64,
    "latency_p95_s": pl.Float64,
    "latency_max_s": pl.Float64,
    "breaker": pl.String,
    "transitions": pl.Int64,
    "quota": pl.String,
}


@dataclass(slots=True)
class ProviderStats:
    """Plain counters of one provider."""

    calls: int = 0
    ok: int = 0
    errors: Tally[str] = field(default_factory=Tally)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


class ProviderAnalytics:
    """Collects what the router sees; attach to `Breakers` to see their transitions."""

    def __init__(
        self,
        *,
        limiter: RateLimiter | None = None,
        breakers: Breakers | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.limiter = limiter
        self.breakers = breakers
        self.registry = registry or CollectorRegistry()
        r = self.registry
        r.register(_ScrapeCollector(self))  # first: quota gauges are fresh in the same scrape
        self._calls = Counter(
            "qv_provider_calls", "Provider calls by outcome", ["provider", "outcome"], registry=r
        )
        self._errors = Counter(
            "qv_provider_errors",
            "Failed provider calls by error kind",
            ["provider", "kind"],
            registry=r,
        )
        self._latency = Histogram(
            "qv_provider_latency_seconds",
            "Provider call latency",
            ["provider"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._transitions = Counter(
            "qv_breaker_transitions",
            "Circuit breaker transitions",
            ["provider", "to_state"],
            registry=r,
        )
        self._cache = Counter(
            "qv_router_requests", "Router requests by how they were answered", ["how"], registry=r
        )
        self._quota_used = Gauge(
            "qv_provider_quota_used", "Calls used in the window", ["provider", "window"], registry=r
        )
        self._quota_left = Gauge(
            "qv_provider_quota_left", "Calls left in the window", ["provider", "window"], registry=r
        )
        self._stats: dict[str, ProviderStats] = {}
        self.transitions: list[Transition] = []
        self.requests: Tally[str] = Tally()
        self._lock = threading.Lock()
        if breakers is not None:
            breakers.add_listener(self.on_transition)

    # -- recording -------------------------------------------------------------------------
    def record_call(
        self, provider: str, ok: bool, latency_s: float, error_kind: str | None = None
    ) -> None:
        """Count one provider call with its outcome and latency."""
        self._calls.labels(provider, "ok" if ok else "error").inc()
        self._latency.labels(provider).observe(latency_s)
        if not ok:
            self._errors.labels(provider, error_kind or "unknown").inc()
        with self._lock:
            stats = self._stats.setdefault(provider, ProviderStats())
            stats.calls += 1
            stats.latencies_s.append(latency_s)
            if ok:
                stats.ok += 1
            else:
                stats.errors[error_kind or "unknown"] += 1

    def record_skip(self, provider: str, kind: str) -> None:
        """Count a call the router did not make (breaker open, quota spent)."""
        self._errors.labels(provider, kind).inc()
        with self._lock:
            self._stats.setdefault(provider, ProviderStats()).errors[kind] += 1

    def record_request(self, how: str) -> None:
        """Count a router request answered by `how`: fetched, cached or shared."""
        self._cache.labels(how).inc()
        with self._lock:
            self.requests[how] += 1

    def on_transition(self, transition: Transition) -> None:
        """Breaker listener: keep the transition and count it."""
        self._transitions.labels(transition.provider, transition.to_state.value).inc()
        with self._lock:
            self.transitions.append(transition)

    # -- reading ---------------------------------------------------------------------------
    @property
    def has_data(self) -> bool:
        """Say whether anything was recorded yet."""
        with self._lock:
            return bool(self._stats or self.transitions)

    def refresh_quota(self) -> None:
        """Copy the limiter's used/left per window into the gauges."""
        if self.limiter is None:
            return
        for u in self.limiter.usage():
            self._quota_used.labels(u.provider, str(u.rate)).set(u.used)
            self._quota_left.labels(u.provider, str(u.rate)).set(u.left)

    def _quota_text(self) -> tuple[dict[str, str], set[str]]:
        out: dict[str, list[str]] = {}
        busy: set[str] = set()
        if self.limiter is not None:
            for u in self.limiter.usage():
                out.setdefault(u.provider, []).append(f"{u.rate}: {u.used} used, {u.left} left")
                if u.used:
                    busy.add(u.provider)
        return {k: "; ".join(v) for k, v in out.items()}, busy

    def snapshot(self) -> pl.DataFrame:
        """Return one row per provider in use: calls, errors, latency quantiles, breaker, quota.

        A provider is in use once the router called it, its breaker exists or it used quota
        (an HTTP client gating itself through the limiter counts there even without router).
        """
        self.refresh_quota()
        quota, busy = self._quota_text()
        states = {n: b.state.value for n, b in self.breakers.all().items()} if self.breakers else {}
        with self._lock:
            stats = {
                k: (v.calls, v.ok, dict(v.errors), list(v.latencies_s))
                for k, v in self._stats.items()
            }
            moves = Tally(t.provider for t in self.transitions)
        names = sorted(set(stats) | set(states) | busy)  # providers with nothing to say stay out
        rows: list[dict[str, Any]] = []
        for name in names:
            calls, ok, errors, lat = stats.get(name, (0, 0, {}, []))
            series = pl.Series(lat, dtype=pl.Float64)
            rows.append(
                {
                    "provider": name,
                    "calls": calls,
                    "ok": ok,
                    "errors": sum(errors.values()),
                    "errors_by_kind": ", ".join(f"{k}={v}" for k, v in sorted(errors.items())),
                    "latency_p50_s": series.quantile(0.5) if lat else None,
                    "latency_p95_s": series.quantile(0.95) if lat else None,
                    "latency_max_s": series.max() if lat else None,
                    "breaker": states.get(name, "closed"),
                    "transitions": moves.get(name, 0),
                    "quota": quota.get(name, ""),
                }
            )
        return pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA)

    def transitions_frame(self) -> pl.DataFrame:
        """Return every breaker transition seen: provider, from, to, at, reason."""
        with self._lock:
            items = list(self.transitions)
        return pl.DataFrame(
            {
                "provider": [t.provider for t in items],
                "from_state": [t.from_state.value for t in items],
                "to_state": [t.to_state.value for t in items],
                "at": [t.at for t in items],
                "reason": [t.reason for t in items],
            },
            schema={
                "provider": pl.String,
                "from_state": pl.String,
                "to_state": pl.String,
                "at": pl.Datetime("us", "UTC"),
                "reason": pl.String,
            },
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot, transitions and request counts as plain data."""
        with self._lock:
            requests = dict(self.requests)
        return {
            "providers": self.snapshot().to_dicts(),
            "transitions": self.transitions_frame().to_dicts(),
            "requests": requests,
        }


class _ScrapeCollector(Collector):
    """Per scrape: refresh the quota gauges and export each breaker's current state.

    `qv_breaker_state{provider, state}` is 1 for the state the breaker is in (an open breaker
    whose cool-down is over reads as half_open); alerts use it for "open for 5 minutes".
    """

    def __init__(self, analytics: ProviderAnalytics) -> None:
        self.analytics = analytics

    def collect(self) -> list[Metric]:
        self.analytics.refresh_quota()
        family = GaugeMetricFamily(
            "qv_breaker_state", "1 for the state each provider's breaker is in",
            labels=["provider", "state"],
        )  # fmt: skip
        breakers = self.analytics.breakers
        if breakers is not None:
            from quantivista.acquisition.breaker import BreakerState

            for name, breaker in sorted(breakers.all().items()):
                current = breaker.state
                for state in BreakerState:
                    family.add_metric([name, state.value], 1.0 if state is current else 0.0)
        return [family]
