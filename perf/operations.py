"""Costs of the operations layer; prints one JSON line.

- alert_eval_ms: one evaluation of the 12 shipped rules (ops/alerts.yml) in-process over an
  hour of 15-second scrapes of `SERIES` series (providers, breakers, freshness groups, API
  buckets), the work `alerting.enabled` adds every `interval_s`; median of `REPEAT`;
- scrape_ms: one in-process scrape of the shared registry plus a provider analytics registry;
- span_us_noop / span_us_sdk: one pipeline `stage()` (histogram + span) without and with the
  OpenTelemetry SDK installed (spans to a discarding processor).
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from quantivista.ops.alerting import Alerter, load_rules
from quantivista.ops.metrics import stage

REPEAT = 7
PROVIDERS, GROUPS, ROUTES = 8, 20, 15


def _registry() -> tuple[CollectorRegistry, int]:
    r = CollectorRegistry()
    calls = Counter("qv_provider_calls", "", ["provider", "outcome"], registry=r)
    state = Gauge("qv_breaker_state", "", ["provider", "state"], registry=r)
    fresh = Gauge("qv_freshness_last_bar_timestamp_seconds", "", ["group", "timeframe"], registry=r)
    latency = Histogram("qv_api_request_seconds", "", ["route"], registry=r)
    for p in range(PROVIDERS):
        calls.labels(f"p{p}", "ok").inc(100)
        for s in ("closed", "open", "half_open"):
            state.labels(f"p{p}", s).set(1 if s == "closed" else 0)
    for g in range(GROUPS):
        fresh.labels(f"g{g}", "1m").set(time.time())
    for route in range(ROUTES):
        latency.labels(f"/r{route}").observe(0.01)
    series = sum(len(f.samples) for f in r.collect())
    return r, series


def main() -> None:
    registry, series = _registry()
    alerter = Alerter(load_rules(), [registry], [])
    start = datetime(2026, 1, 5, 14, tzinfo=UTC)
    scrape, evals = [], []
    for i in range(240 + REPEAT):  # an hour of 15-second scrapes, then REPEAT evaluated ones
        began = time.perf_counter()
        samples = alerter.scrape()
        scrape.append(time.perf_counter() - began)
        now = start + timedelta(seconds=15 * i)
        alerter.add_samples(now, samples)
        if i >= 240:  # each evaluation after a new scrape, as the alerting thread runs them
            began = time.perf_counter()
            alerter.evaluate(now)
            evals.append(time.perf_counter() - began)

    def per_stage() -> float:
        n = 20_000
        began = time.perf_counter()
        for _ in range(n):
            with stage("perf"):
                pass
        return (time.perf_counter() - began) / n * 1e6

    noop = min(per_stage() for _ in range(3))
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    sdk = min(per_stage() for _ in range(3))
    print(json.dumps({
        "series": series, "scrapes_kept": len(alerter.history.snapshots),
        "alert_eval_ms": round(statistics.median(evals) * 1e3, 2),
        "alert_eval_ms_range": [round(min(evals) * 1e3, 2), round(max(evals) * 1e3, 2)],
        "scrape_ms": round(statistics.median(scrape) * 1e3, 3),
        "span_us_noop": round(noop, 2), "span_us_sdk": round(sdk, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
