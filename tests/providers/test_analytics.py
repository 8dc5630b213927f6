"""Provider analytics, the platform's resilience wiring and `qv providers`."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from prometheus_client import generate_latest
from typer.testing import CliRunner

from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.acquisition.breaker import Breakers
from quantivista.acquisition.limits import RateLimiter
from quantivista.cli import app
from quantivista.clock import TestClock
from quantivista.config import (
    BreakerSettings,
    IngestSettings,
    ResilienceSettings,
    RetrySettings,
    Settings,
)
from quantivista.errors import TransientProviderError
from quantivista.platform import Platform
from quantivista.providers.base import BarRequest, FetchResult, Provider
from quantivista.providers.registry import ProviderRegistry
from quantivista.providers.synthetic import SyntheticProvider
from quantivista.services.providers import PROVIDER_STATS_KEY
from quantivista.testing.fake_providers import capabilities


def test_records_calls_errors_and_latency() -> None:
    analytics = ProviderAnalytics()
    analytics.record_call("av", True, 0.2)
    analytics.record_call("av", True, 0.4)
    analytics.record_call("av", False, 1.0, "RateLimitedError")
    analytics.record_skip("av", "CircuitOpenError")
    snap = analytics.snapshot()
    row = snap.row(0, named=True)
    assert (row["provider"], row["calls"], row["ok"], row["errors"]) == ("av", 3, 2, 2)
    assert row["errors_by_kind"] == "CircuitOpenError=1, RateLimitedError=1"
    assert row["latency_p50_s"] == pytest.approx(0.4)
    assert row["latency_max_s"] == pytest.approx(1.0)
    reg = analytics.registry
    assert reg.get_sample_value("qv_provider_calls_total", {"provider": "av", "outcome": "ok"}) == 2
    assert (
        reg.get_sample_value(
            "qv_provider_errors_total", {"provider": "av", "kind": "RateLimitedError"}
        )
        == 1
    )
    assert reg.get_sample_value("qv_provider_latency_seconds_count", {"provider": "av"}) == 3
    assert (
        reg.get_sample_value("qv_provider_latency_seconds_bucket", {"provider": "av", "le": "0.25"})
        == 1
    )
    exposition = generate_latest(reg).decode()  # what a /metrics endpoint would serve
    assert 'qv_provider_calls_total{outcome="error",provider="av"} 1.0' in exposition


def test_breaker_transitions_and_quota_show_up() -> None:
    clock = TestClock()
    limiter = RateLimiter({"poly": ["5/minute"]}, clock=clock)
    breakers = Breakers(clock, failure_threshold=1)
    analytics = ProviderAnalytics(limiter=limiter, breakers=breakers)
    limiter.acquire("poly")
    limiter.acquire("poly")
    breakers.get("poly").record_failure("503")
    snap = analytics.snapshot()
    assert snap["provider"].to_list() == ["poly"]
    row = snap.row(0, named=True)
    assert row["quota"] == "5/minute: 2 used, 3 left"
    assert (row["breaker"], row["transitions"]) == ("open", 1)
    frame = analytics.transitions_frame()
    assert frame.select("provider", "from_state", "to_state").rows() == [("poly", "closed", "open")]
    assert frame["at"].to_list() == [clock.now()]
    reg = analytics.registry
    labels = {"provider": "poly", "window": "5/minute"}
    assert reg.get_sample_value("qv_provider_quota_left", labels) == 3
    assert (
        reg.get_sample_value(
            "qv_breaker_transitions_total", {"provider": "poly", "to_state": "open"}
        )
        == 1
    )


def test_empty_analytics_has_an_empty_typed_snapshot() -> None:
    analytics = ProviderAnalytics()
    assert not analytics.has_data
    assert analytics.snapshot().is_empty()
    assert analytics.snapshot().schema["calls"] == pl.Int64
    assert analytics.as_dict() == {"providers": [], "transitions": [], "requests": {}}


class DownProvider(Provider):
    """A provider that is always down."""

    name = "down"
    capabilities = capabilities(priority=1)

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        raise TransientProviderError("503 service unavailable", provider=self.name)


class GatedProvider(Provider):
    """Stands in for an HTTP client: it declares that it calls its gate itself."""

    name = "gated"
    capabilities = capabilities()
    gates_requests = True


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    registry = ProviderRegistry(load_entry_points=False)
    for cls in (DownProvider, SyntheticProvider, GatedProvider):
        registry.register(cls)
    settings = Settings(
        data_dir=tmp_path / "data",
        ingest=IngestSettings(fetch_concurrency=1),
        resilience=ResilienceSettings(
            breaker=BreakerSettings(failure_threshold=2),
            retry=RetrySettings(max_attempts=1),
            limits={"gated": ["1/second"]},
        ),
    )
    p = Platform.from_settings(settings, clock=TestClock(), registry=registry)
    yield p
    p.close()


def test_platform_fails_over_and_records_everything(platform: Platform) -> None:
    # tickers trading through January 2023, so every answer has bars (empty ones are not cached)
    synthetic = platform.provider("synthetic")
    trading = set(synthetic.symbols(date(2023, 1, 3))) & set(synthetic.symbols(date(2023, 1, 31)))  # type: ignore[attr-defined]
    symbols = sorted(trading)[:3]
    job = platform.ingest(symbols, "2023-01-02", "2023-01-31", providers=["down", "synthetic"])
    assert job.status.value == "succeeded"
    snap = {r["provider"]: r for r in platform.runtime.acquisition.analytics.snapshot().to_dicts()}
    # two failures open the breaker; the third symbol goes straight to the backup
    assert snap["down"]["errors_by_kind"] == "TransientProviderError=2"
    assert snap["down"]["breaker"] == "open"
    assert snap["synthetic"]["ok"] == 3
    assert platform.runtime.acquisition.analytics.transitions_frame()["to_state"].to_list() == [
        "open"
    ]
    saved = platform.runtime.backend.catalog.get_state(PROVIDER_STATS_KEY)
    assert saved is not None
    assert {r["provider"] for r in saved["providers"]} == {"down", "synthetic"}
    # the same request again is answered from the cache: no provider call
    platform.ingest(symbols, "2023-01-02", "2023-01-31", providers=["down", "synthetic"])
    assert platform.runtime.acquisition.analytics.requests["cached"] == 3
    assert (
        platform.runtime.acquisition.analytics.snapshot().filter(pl.col("provider") == "synthetic")[
            "calls"
        ][0]
        == 3
    )


def test_platform_hands_its_limiter_to_self_gating_providers(platform: Platform) -> None:
    provider = platform.provider("gated")
    assert provider.gate is platform.runtime.acquisition.limiter  # type: ignore[attr-defined]
    assert platform.provider("synthetic") is platform.provider("SYNTHETIC")


def test_qv_providers_lists_capabilities_and_the_last_stats(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    out = runner.invoke(app, ["--data-dir", str(platform.root), "providers"])
    assert out.exit_code == 0, out.output
    assert "synthetic" in out.output
    assert "no provider calls recorded yet" in out.output
    symbols = platform.provider("synthetic").symbols()[:1]  # type: ignore[attr-defined]
    platform.ingest(symbols, "2023-01-02", "2023-01-31", providers=["down", "synthetic"])
    out = runner.invoke(app, ["--data-dir", str(platform.root), "providers"])
    assert out.exit_code == 0, out.output
    assert "last ingestion" in out.output
    assert "TransientProviderError=1" in out.output


@pytest.mark.redis
def test_qv_providers_shows_the_shared_quota_live_from_redis(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    from quantivista.acquisition.limits import RedisBackend
    from quantivista.clock import SystemClock

    prefix = f"qv-test:{uuid.uuid4().hex[:8]}"
    worker = RateLimiter(
        {"polygon": ["5/minute"]},
        clock=SystemClock(),
        backend=RedisBackend(redis_url, prefix=prefix),
    )
    worker.acquire("polygon")
    worker.acquire("polygon")  # another process used two of polygon's five calls
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("QV_RESILIENCE__BACKEND", "redis")
    monkeypatch.setenv("QV_RESILIENCE__REDIS_PREFIX", prefix)
    monkeypatch.setenv("QV_RESILIENCE__MARGIN_S", "0")
    try:
        out = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "d"), "providers"])
    finally:
        worker.reset()
    assert out.exit_code == 0, out.output
    assert "shared rate-limit quota" in out.output
    quota_part = out.output.split("shared rate-limit quota", 1)[1]  # the registry table is above
    line = next(x for x in quota_part.splitlines() if "polygon" in x and "5/minute" in x)
    cells = [c.strip() for c in line.split("│")[1:-1]]
    assert cells[:5] == ["polygon", "5/minute", "5", "2", "3"]  # limit, used, left
