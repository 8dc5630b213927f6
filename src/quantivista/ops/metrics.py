"""The platform's shared Prometheus metrics: one process-wide registry, stable names.

Every service exports `REGISTRY` (the API at its `/metrics`, the others through
`ProbeServer`). Names are part of the operating contract: the alert rules in
deploy/prometheus and the Grafana dashboards use them, and a test checks that every name they
use is exported. Add metrics here rather than beside the code that sets them, so the other
services (stream, integrate, worker, scheduler) record into the same names.

| metric | type | labels | what |
| --- | --- | --- | --- |
| qv_ingest_rows_total | counter | source, outcome | rows: written, unchanged, quarantined |
| qv_ingest_batches_total | counter | source | batches through the pipeline |
| qv_stage_seconds | histogram | stage | acquire, normalize, validate, store, publish |
| qv_quality_score | gauge | source | quality score (0-1) of the last batch |
| qv_quarantine_ratio | gauge | source | share of the last batch's rows quarantined |
| qv_freshness_last_bar_timestamp_seconds | gauge | group, timeframe | newest bar per group |
| qv_freshness_last_ingest_timestamp_seconds | gauge | group | when a group last had bars stored |
| qv_consumer_lag_messages | gauge | consumer, topic | messages a bus consumer is behind |
| qv_bus_duplicate_deliveries_total | counter | consumer, topic | acked messages delivered again |
| qv_queue_depth | gauge | queue | items waiting in a queue |
| qv_jobs_total | counter | kind, state | jobs finished by kind and final state |
| qv_jobs_running | gauge | kind | jobs running in this process |
| qv_scheduler_heartbeat_timestamp_seconds | gauge | | the active scheduler's last loop |
| qv_scheduler_leader | gauge | | 1 while this process holds the scheduler lease |
| qv_scheduler_last_run_timestamp_seconds | gauge | entry, outcome | last run of a schedule entry |
| qv_market_open | gauge | exchange | 1 while the exchange's regular session is open |
| qv_disk_free_bytes, qv_disk_total_bytes | gauge | path | the data directory's file system |
| qv_build_info | gauge | version, service | 1, with the version and service as labels |
| qv_alerts_firing | gauge | alertname | alerts firing in the in-process alerting |
| qv_alert_notifications_total | counter | notifier, outcome | notifications sent or failed |

Provider metrics (qv_provider_*, qv_breaker_*, qv_router_requests_total) live in each
acquisition's `ProviderAnalytics.registry`; the API's own (qv_api_*) in `ApiMetrics`.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quantivista.ops.tracing import span

__all__ = [
    "ALERTS_FIRING",
    "ALERT_NOTIFICATIONS",
    "BUS_DUPLICATES",
    "CONSUMER_LAG",
    "INGEST_BATCHES",
    "INGEST_ROWS",
    "JOBS",
    "JOBS_RUNNING",
    "QUALITY_SCORE",
    "QUARANTINE_RATIO",
    "QUEUE_DEPTH",
    "REGISTRY",
    "SCHEDULER_HEARTBEAT",
    "SCHEDULER_LAST_RUN",
    "SCHEDULER_LEADER",
    "STAGE_BUCKETS_S",
    "STAGE_NAMES",
    "STAGE_SECONDS",
    "SymbolGroups",
    "exported_names",
    "observe_stored",
    "record_job",
    "stage",
    "watch_process",
]

REGISTRY = CollectorRegistry()
r = REGISTRY

STAGE_NAMES = ("acquire", "normalize", "validate", "store", "publish")
STAGE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

INGEST_ROWS = Counter(
    "qv_ingest_rows", "Rows through the pipeline by source and outcome", ["source", "outcome"],
    registry=r,
)  # fmt: skip
INGEST_BATCHES = Counter(
    "qv_ingest_batches", "Batches through the pipeline by source", ["source"], registry=r
)
STAGE_SECONDS = Histogram(
    "qv_stage_seconds", "Pipeline stage latency", ["stage"], buckets=STAGE_BUCKETS_S, registry=r
)
QUALITY_SCORE = Gauge(
    "qv_quality_score", "Quality score (0-1) of the last batch by source", ["source"], registry=r
)
QUARANTINE_RATIO = Gauge(
    "qv_quarantine_ratio", "Share of the last batch's rows quarantined", ["source"], registry=r
)
LAST_BAR = Gauge(
    "qv_freshness_last_bar_timestamp_seconds", "Newest stored bar per symbol group (Unix s)",
    ["group", "timeframe"], registry=r,
)  # fmt: skip
LAST_INGEST = Gauge(
    "qv_freshness_last_ingest_timestamp_seconds", "When a symbol group last had bars stored",
    ["group"], registry=r,
)  # fmt: skip
CONSUMER_LAG = Gauge(
    "qv_consumer_lag_messages", "Messages a bus consumer is behind", ["consumer", "topic"],
    registry=r,
)  # fmt: skip
# a broker that hands out a message acked already (nats-server 2.9 around expiring pulls):
# the subscription acks it again and skips it; a steady rate says the broker misbehaves
BUS_DUPLICATES = Counter(
    "qv_bus_duplicate_deliveries", "Acked messages the broker delivered again (not applied)",
    ["consumer", "topic"], registry=r,
)  # fmt: skip
QUEUE_DEPTH = Gauge("qv_queue_depth", "Items waiting in a queue", ["queue"], registry=r)
JOBS = Counter("qv_jobs", "Jobs finished by kind and final state", ["kind", "state"], registry=r)
JOBS_RUNNING = Gauge("qv_jobs_running", "Jobs running in this process", ["kind"], registry=r)
SCHEDULER_HEARTBEAT = Gauge(
    "qv_scheduler_heartbeat_timestamp_seconds", "The active scheduler's last loop (Unix s)",
    registry=r,
)  # fmt: skip
SCHEDULER_LEADER = Gauge(
    "qv_scheduler_leader", "1 while this process holds the scheduler lease", registry=r
)
SCHEDULER_LAST_RUN = Gauge(
    "qv_scheduler_last_run_timestamp_seconds", "Last run of a schedule entry by outcome (Unix s)",
    ["entry", "outcome"], registry=r,
)  # fmt: skip

ALERTS_FIRING = Gauge(
    "qv_alerts_firing", "Alerts firing in the in-process alerting, by rule", ["alertname"],
    registry=r,
)  # fmt: skip
ALERT_NOTIFICATIONS = Counter(
    "qv_alert_notifications", "Alert notifications by notifier and outcome",
    ["notifier", "outcome"], registry=r,
)  # fmt: skip


@contextmanager
def stage(name: str, **attributes: Any) -> Iterator[None]:
    """Time a pipeline stage into `qv_stage_seconds{stage=name}`, in a span of that name."""
    started = time.perf_counter()
    try:
        with span(name, **attributes):
            yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - started)


def record_job(kind: str, state: str) -> None:
    """Count a job that reached its final `state` (succeeded, partial, failed)."""
    JOBS.labels(kind, state).inc()


class SymbolGroups:
    """Symbol groups for freshness: name -> regular expressions matched against symbols.

    With no groups every symbol is in the group "all"; a symbol no group matches is in
    "other". Settings name them (`ops.symbol_groups`); the runner sets them at start.
    """

    def __init__(self, groups: Mapping[str, Iterable[str]] | None = None) -> None:
        self.groups = {
            name: "|".join(f"(?:{p})" for p in pats) for name, pats in (groups or {}).items()
        }

    def column(self, symbols: pl.Expr) -> pl.Expr:
        """Return an expression naming each symbol's group (first match wins)."""
        if not self.groups:
            return pl.lit("all")
        expr: pl.Expr = pl.lit("other")
        for name, pattern in reversed(self.groups.items()):
            expr = (
                pl.when(symbols.str.contains(f"^(?:{pattern})$")).then(pl.lit(name)).otherwise(expr)
            )
        return expr


GROUPS = SymbolGroups()


def observe_stored(
    source: str,
    *,
    written: int,
    unchanged: int,
    quarantined: int,
    score: float,
    clean: pl.DataFrame,
    now: datetime,
    groups: SymbolGroups | None = None,
) -> None:
    """Record one stored batch: rows by outcome, quality, quarantine share, freshness."""
    source = source or "unknown"
    INGEST_BATCHES.labels(source).inc()
    for outcome, rows in (
        ("written", written),
        ("unchanged", unchanged),
        ("quarantined", quarantined),
    ):
        if rows:
            INGEST_ROWS.labels(source, outcome).inc(rows)
    total = written + unchanged + quarantined
    if total:
        QUALITY_SCORE.labels(source).set(score)
        QUARANTINE_RATIO.labels(source).set(quarantined / total)
    if not written or clean.is_empty() or not {"symbol", "ts", "timeframe"} <= set(clean.columns):
        return
    newest = (
        clean.group_by((groups or GROUPS).column(pl.col("symbol")).alias("group"), "timeframe")
        .agg(pl.col("ts").max())
        .with_columns(pl.col("ts").dt.epoch("ms") / 1000.0)
    )  # one row per group and timeframe, not per bar
    for group, timeframe, ts in newest.iter_rows():
        gauge = LAST_BAR.labels(group, str(timeframe))
        gauge.set(max(ts, _value(gauge)))
        LAST_INGEST.labels(group).set(now.timestamp())


def _value(gauge: Gauge) -> float:
    return float(gauge._value.get())  # a later batch may carry older bars (a backfill)


# -- per-process gauges read at scrape time ------------------------------------------------
MarketOpen = Callable[[], bool]


class _ProcessCollector(Collector):
    """Disk space of watched paths, exchanges' open state and build info, read per scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.paths: set[Path] = set()
        self.markets: dict[str, MarketOpen] = {}
        self.builds: set[tuple[str, str]] = set()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            paths, markets, builds = sorted(self.paths), dict(self.markets), sorted(self.builds)
        free = GaugeMetricFamily(
            "qv_disk_free_bytes", "Free bytes where data lives", labels=["path"]
        )
        total = GaugeMetricFamily(
            "qv_disk_total_bytes", "Size of that file system", labels=["path"]
        )
        for path in paths:
            try:
                usage = shutil.disk_usage(path)
            except OSError:  # not created yet: nothing to say
                continue
            free.add_metric([str(path)], usage.free)
            total.add_metric([str(path)], usage.total)
        market = GaugeMetricFamily(
            "qv_market_open", "1 while the exchange's regular session is open", labels=["exchange"]
        )
        for exchange, is_open in sorted(markets.items()):
            market.add_metric([exchange], 1.0 if is_open() else 0.0)
        info = GaugeMetricFamily(
            "qv_build_info", "The running version and service", labels=["version", "service"]
        )
        for version, service in builds:
            info.add_metric([version, service], 1.0)
        return [free, total, market, info]


_PROCESS = _ProcessCollector()
REGISTRY.register(_PROCESS)


def watch_process(
    service: str,
    *,
    data_dir: Path | None = None,
    markets: Mapping[str, MarketOpen] | None = None,
) -> None:
    """Export this process's build info, its data directory's disk and markets' open state.

    `markets` maps an exchange (MIC) to a function saying whether it is open now.
    """
    from quantivista._version import __version__

    with _PROCESS._lock:
        _PROCESS.builds.add((__version__, service))
        if data_dir is not None:
            _PROCESS.paths.add(data_dir.resolve())
        _PROCESS.markets.update(markets or {})


def exported_names(*registries: CollectorRegistry) -> set[str]:
    """Return every sample name the registries can export (counters with `_total`, etc.)."""
    names: set[str] = set()
    for registry in (REGISTRY, *registries):
        for family in registry.collect():
            names.add(family.name)
            names |= {s.name for s in family.samples}
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}{x}" for x in ("_bucket", "_count", "_sum", "_created")}
    return names
