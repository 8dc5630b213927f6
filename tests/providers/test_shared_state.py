"""Breakers, health and cached answers shared by processes through a real Redis."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime

import polars as pl
import pytest
from typer.testing import CliRunner

from quantivista.acquisition.breaker import Breakers, BreakerState
from quantivista.acquisition.cache import ResponseCache
from quantivista.acquisition.health import HealthMonitor
from quantivista.acquisition.shared import (
    RedisBreakerState,
    RedisHealthStore,
    RedisResultCache,
    decode_result,
    encode_result,
    redis_client,
)
from quantivista.acquisition.wiring import Acquisition
from quantivista.cli import app
from quantivista.clock import SystemClock
from quantivista.config import Settings
from quantivista.errors import CircuitOpenError, TransientProviderError
from quantivista.model.payloads import RawPayload
from quantivista.providers.base import BarRequest, FetchResult
from quantivista.providers.registry import default_registry
from quantivista.services.providers import shared_state

pytestmark = pytest.mark.redis

OLD = BarRequest.of("AAPL", "2020-01-02", "2020-01-31")


def _breakers(url: str, redis_prefix: str, reset_s: float = 30.0) -> Breakers:
    shared = RedisBreakerState(redis_client(url), redis_prefix)
    return Breakers(SystemClock(), failure_threshold=3, reset_timeout_s=reset_s, shared=shared)


def _open_breaker(url: str, redis_prefix: str) -> None:
    breaker = _breakers(url, redis_prefix).get("polygon")
    for _ in range(3):
        breaker.record_failure(TransientProviderError("503", provider="polygon"))
    assert breaker.state is BreakerState.OPEN


def _run(target: object, *args: object) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == 0


def test_a_breaker_opened_in_one_process_is_open_in_another(
    redis_url: str, redis_prefix: str
) -> None:
    here = _breakers(redis_url, redis_prefix).get("polygon")
    assert here.state is BreakerState.CLOSED
    _run(_open_breaker, redis_url, redis_prefix)
    assert here.state is BreakerState.OPEN
    assert 25.0 < here.retry_in_s() <= 30.0  # the cool-down runs from when the other opened it
    with pytest.raises(CircuitOpenError):
        here.before_call()
    assert "opened elsewhere" in here.transitions[-1].reason
    # a breaker without shared state knows nothing of it
    alone = Breakers(SystemClock(), failure_threshold=3).get("polygon")
    assert alone.state is BreakerState.CLOSED


def test_one_probe_for_all_processes_and_its_success_closes_every_breaker(
    redis_url: str, redis_prefix: str
) -> None:
    a = _breakers(redis_url, redis_prefix, reset_s=0.2).get("p")
    b = _breakers(redis_url, redis_prefix, reset_s=0.2).get("p")
    for _ in range(3):
        a.record_failure("boom")
    assert b.state is BreakerState.OPEN
    time.sleep(0.3)
    assert a.state is BreakerState.HALF_OPEN and b.state is BreakerState.HALF_OPEN
    assert a.before_call() is True  # a holds the probe slot of every process
    with pytest.raises(CircuitOpenError):
        b.before_call()
    a.record_success(probe=True)
    assert b.state is BreakerState.CLOSED
    assert b.before_call() is False


def test_a_failed_probe_reopens_the_breaker_everywhere(redis_url: str, redis_prefix: str) -> None:
    a = _breakers(redis_url, redis_prefix, reset_s=0.2).get("p")
    b = _breakers(redis_url, redis_prefix, reset_s=0.2).get("p")
    for _ in range(3):
        b.record_failure("boom")
    time.sleep(0.3)
    probe = a.before_call()
    a.record_failure("still down", probe=probe)
    assert b.state is BreakerState.OPEN
    assert b.retry_in_s() > 0.1


def _record_failures(url: str, redis_prefix: str) -> None:
    health = HealthMonitor(store=RedisHealthStore(redis_client(url), redis_prefix))
    for _ in range(10):
        health.record("tiingo", False, 0.5, "HTTP 503")


def test_health_scores_are_those_of_every_process(redis_url: str, redis_prefix: str) -> None:
    here = HealthMonitor(store=RedisHealthStore(redis_client(redis_url), redis_prefix))
    here.record("tiingo", True, 0.1)
    _run(_record_failures, redis_url, redis_prefix)
    seen = here.get("tiingo")
    assert seen.calls == 11 and seen.failures == 10
    assert seen.last_error == "HTTP 503"
    assert seen.success_ewma == pytest.approx(0.8**10, rel=1e-9)  # same EWMA as in memory
    local = HealthMonitor()
    local.record("tiingo", True, 0.1)
    for _ in range(10):
        local.record("tiingo", False, 0.5, "HTTP 503")
    assert here.score("tiingo") == pytest.approx(local.score("tiingo"), rel=1e-9)
    assert HealthMonitor().score("tiingo") == 1.0


def _result() -> FetchResult:
    bars = pl.DataFrame(
        {
            "symbol": ["AAPL", "AAPL"],
            "ts": [datetime(2020, 1, 2, tzinfo=UTC)] * 2,
            "close": [300.35, 297.43],
        }
    )
    raw = RawPayload("p", "https://x/AAPL", 200, b"\x00{}", datetime(2020, 2, 1, tzinfo=UTC))
    return FetchResult(bars=bars, raw=[raw], provider="p", metadata={"pages": 2, "obj": object()})


def test_results_survive_the_trip_through_redis_fields() -> None:
    result = _result()
    back = decode_result({k.encode(): v for k, v in encode_result(result).items()})
    assert back.bars.equals(result.bars)
    assert back.actions.equals(result.actions)
    assert back.raw == result.raw
    assert back.provider == "p"
    assert back.metadata == {"pages": 2}  # objects describe the call, not the answer


def _fill_cache(url: str, redis_prefix: str) -> None:
    cache = ResponseCache(l2=RedisResultCache(redis_client(url), redis_prefix))
    cache.put(OLD, _result(), datetime.now(UTC))


def test_an_answer_cached_by_one_process_serves_another(redis_url: str, redis_prefix: str) -> None:
    here = ResponseCache(l2=RedisResultCache(redis_client(redis_url), redis_prefix))
    now = datetime.now(UTC)
    assert here.get(OLD, now) is None
    _run(_fill_cache, redis_url, redis_prefix)
    hit = here.get(OLD, now)
    assert hit is not None
    assert hit.metadata["cache_level"] == "l2" and hit.metadata["cached"] is True
    assert hit.bars.equals(_result().bars)
    assert (here.hits, here.l2_hits, here.misses) == (1, 1, 1)
    again = here.get(OLD, now)  # now in L1
    assert again is not None and "cache_level" not in again.metadata
    assert here.l2_hits == 1


def test_a_redis_outage_leaves_each_part_working(redis_prefix: str) -> None:
    dead = redis_client("redis://127.0.0.1:1/0")  # nothing listens there
    breakers = Breakers(
        SystemClock(), failure_threshold=1, shared=RedisBreakerState(dead, redis_prefix)
    )
    breaker = breakers.get("p")
    breaker.record_failure("boom")
    assert breaker.state is BreakerState.OPEN
    health = HealthMonitor(store=RedisHealthStore(dead, redis_prefix))
    health.record("p", False, 1.0, "x")
    assert health.get("p").failures == 1
    cache = ResponseCache(l2=RedisResultCache(dead, redis_prefix))
    cache.put(OLD, _result(), datetime.now(UTC))
    assert cache.get(OLD, datetime.now(UTC)) is not None


def test_the_redis_backend_wires_shared_parts(redis_url: str, redis_prefix: str) -> None:
    settings = Settings(
        resilience={"backend": "redis", "redis_prefix": redis_prefix},
        services={"redis_url": redis_url},
    )
    one = Acquisition(settings, SystemClock(), default_registry)
    two = Acquisition(settings, SystemClock(), default_registry)
    try:
        breaker = one.breakers.get("synthetic")
        for _ in range(settings.resilience.breaker.failure_threshold):
            breaker.record_failure("boom")
        assert two.breakers.get("synthetic").state is BreakerState.OPEN
        one.health.record("synthetic", False, 0.2, "x")
        assert two.health.get("synthetic").failures == 1
        assert one.cache is not None and two.cache is not None
        one.cache.put(OLD, _result(), datetime.now(UTC))
        assert two.cache.get(OLD, datetime.now(UTC)) is not None
        # the rate limiter's reset does not wipe the shared state (another key space)
        one.limiter.reset()
        assert two.breakers.get("synthetic").state is BreakerState.OPEN
    finally:
        one.close()
        two.close()
    local = Acquisition(Settings(), SystemClock(), default_registry)
    assert local.breakers.shared is None and local.health.store is None
    local.close()


def test_qv_providers_shows_the_state_every_process_shares(
    redis_url: str, redis_prefix: str
) -> None:
    settings = Settings(
        resilience={"backend": "redis", "redis_prefix": redis_prefix},
        services={"redis_url": redis_url},
    )
    one = Acquisition(settings, SystemClock(), default_registry)
    try:
        for _ in range(settings.resilience.breaker.failure_threshold):
            one.breakers.get("polygon").record_failure("HTTP 503")
        one.health.record("polygon", False, 0.4, "HTTP 503")
    finally:
        one.close()
    frame = shared_state(settings, ["polygon", "yahoo"])
    assert frame is not None
    (row,) = frame.rows(named=True)  # yahoo has no record anywhere
    assert (row["provider"], row["breaker"], row["calls"], row["failures"]) == (
        "polygon", "open", 1, 1,
    )  # fmt: skip
    assert "5 consecutive failures" in row["reason"] and row["health"] < 1
    assert shared_state(Settings(), ["polygon"]) is None  # the memory backend shares nothing
    env = {"QV_RESILIENCE__BACKEND": "redis", "QV_RESILIENCE__REDIS_PREFIX": redis_prefix,
           "QV_SERVICES__REDIS_URL": redis_url, "COLUMNS": "200"}  # fmt: skip
    shown = CliRunner().invoke(app, ["providers"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "shared by every process" in shown.output
    line = next(s for s in shown.output.splitlines() if "polygon" in s and "open" in s)
    assert "5 consecutive failures" in line
