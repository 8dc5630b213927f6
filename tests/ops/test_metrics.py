"""The shared metrics: what the pipeline, jobs, breakers and the process export."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.acquisition.breaker import Breakers
from quantivista.clock import TestClock
from quantivista.config import BreakerSettings, ProbeSettings, Settings
from quantivista.errors import ConfigurationError
from quantivista.ops import metrics
from quantivista.ops.metrics import REGISTRY, SymbolGroups, exported_names, watch_process
from quantivista.ops.probes import ProbeServer
from quantivista.platform import Platform
from quantivista.providers.simulator import SimulatedMarket
from quantivista.reference.calendars import get_calendar


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_an_ingest_records_rows_stages_quality_jobs_and_freshness(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "qv", ops={"symbol_groups": {"ops-test-a": ["A.*"]}})  # type: ignore[arg-type]
    stages = {s: _value("qv_stage_seconds_count", stage=s) for s in metrics.STAGE_NAMES}
    with Platform.from_settings(settings) as p:
        symbols = SimulatedMarket().symbols("2024-06-03")[:3]
        jobs = _value("qv_jobs_total", kind="ingest", state="succeeded")
        before = {
            s.labels["source"]: s.value
            for f in REGISTRY.collect() if f.name == "qv_ingest_rows"
            for s in f.samples if s.name.endswith("_total") and s.labels["outcome"] == "written"
        }  # fmt: skip
        job = p.ingest(symbols, "2024-05-01", "2024-05-31")
        source = job.source_id
        written = before.get(source, 0.0)
    assert job.status.value == "succeeded"
    assert _value("qv_ingest_rows_total", source=source, outcome="written") - written == (
        job.records_processed
    )
    assert _value("qv_jobs_total", kind="ingest", state="succeeded") == jobs + 1
    for name, before in stages.items():
        assert _value("qv_stage_seconds_count", stage=name) > before, name
    assert _value("qv_quality_score", source=source) == pytest.approx(1.0)
    groups = {"ops-test-a" if s.startswith("A") else "other" for s in symbols}
    last_may = datetime(2024, 5, 31, tzinfo=UTC).timestamp()
    for group in groups:
        newest = _value("qv_freshness_last_bar_timestamp_seconds", group=group, timeframe="1d")
        assert datetime(2024, 5, 29, tzinfo=UTC).timestamp() <= newest <= last_may


def test_quarantined_rows_set_the_ratio_and_the_score(tmp_path: Path, make_bars) -> None:  # type: ignore[no-untyped-def]
    bars = make_bars(["QUAR"], sessions=4).with_columns(
        high=pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("high"))
    )
    with Platform.from_settings(Settings(data_dir=tmp_path / "qv")) as p:
        report = p.write_bars(bars, source="ops-quarantine-test")
    assert report.invalid_records == 1
    assert _value("qv_quarantine_ratio", source="ops-quarantine-test") == pytest.approx(0.25)
    assert _value("qv_quality_score", source="ops-quarantine-test") == pytest.approx(
        report.quality_score
    )
    assert _value("qv_ingest_rows_total", source="ops-quarantine-test", outcome="quarantined") == 1


def test_symbol_groups_first_match_wins_and_the_rest_is_other() -> None:
    groups = SymbolGroups({"banks": ["JPM", "BAC"], "tech": ["A.*", "MSFT"], "all-a": ["A.*"]})
    frame = pl.DataFrame({"symbol": ["JPM", "AAPL", "MSFT", "XOM", "JPMX"]})
    named = frame.select(groups.column(pl.col("symbol")))["literal"].to_list()
    assert named == ["banks", "tech", "tech", "other", "other"]
    assert frame.select(SymbolGroups().column(pl.col("symbol"))).item(0, 0) == "all"


def test_a_bad_group_pattern_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"ops\.symbol_groups"):
        Settings(ops={"symbol_groups": {"bad": ["("]}})  # type: ignore[arg-type]


def test_breaker_state_is_read_at_scrape_time() -> None:
    clock = TestClock(datetime(2026, 1, 5, 15, tzinfo=UTC))
    breakers = Breakers.from_settings(
        BreakerSettings(failure_threshold=1, reset_timeout_s=60), clock
    )
    analytics = ProviderAnalytics(breakers=breakers)
    breaker = breakers.get("acme")
    breaker.record_failure("HTTP 503")
    text = generate_latest(analytics.registry).decode()
    assert 'qv_breaker_state{provider="acme",state="open"} 1.0' in text
    assert 'qv_breaker_state{provider="acme",state="closed"} 0.0' in text
    clock.advance(61)
    text = generate_latest(analytics.registry).decode()
    assert 'qv_breaker_state{provider="acme",state="half_open"} 1.0' in text


def test_process_gauges_disk_market_and_build(tmp_path: Path) -> None:
    xnys = get_calendar("XNYS")
    at = {"now": datetime(2024, 6, 3, 15, 0, tzinfo=UTC)}  # a Monday, 11:00 New York
    watch_process("ops-test", data_dir=tmp_path, markets={"XOPS": lambda: xnys.is_open(at["now"])})
    assert _value("qv_disk_total_bytes", path=str(tmp_path.resolve())) > 0
    assert _value("qv_market_open", exchange="XOPS") == 1.0
    at["now"] = datetime(2024, 6, 3, 21, 0, tzinfo=UTC)  # after the close
    assert _value("qv_market_open", exchange="XOPS") == 0.0
    assert any(
        s.labels.get("service") == "ops-test" and s.value == 1.0
        for f in REGISTRY.collect()
        if f.name == "qv_build_info"
        for s in f.samples
    )


def test_the_probe_server_exports_the_shared_registry() -> None:
    metrics.QUEUE_DEPTH.labels("ops-probe-test").set(7)
    own = CollectorRegistry()
    with ProbeServer("stream", ProbeSettings(ports={"stream": 0}), registries=[own]) as probes:
        text = httpx.get(f"{probes.url}/metrics").text
    assert 'qv_queue_depth{queue="ops-probe-test"} 7.0' in text


def test_exported_names_cover_counters_histograms_and_collectors() -> None:
    names = exported_names(ProviderAnalytics().registry)
    for name in (
        "qv_ingest_rows_total", "qv_stage_seconds_bucket", "qv_jobs_total",
        "qv_freshness_last_bar_timestamp_seconds", "qv_disk_free_bytes", "qv_market_open",
        "qv_provider_calls_total", "qv_breaker_state", "qv_provider_latency_seconds_bucket",
    ):  # fmt: skip
        assert name in names, name
    assert "qv_nonexistent" not in names
