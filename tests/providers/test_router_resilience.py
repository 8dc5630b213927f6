"""Router resilience: failover, backoff, Retry-After, breakers, single-flight, cache, order.

The plain failover contract of `Router(providers)` is pinned in test_router.py.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from quantivista.acquisition.breaker import Breakers, BreakerState
from quantivista.acquisition.cache import ResponseCache
from quantivista.acquisition.limits import RateLimiter
from quantivista.acquisition.retry import RetryPolicy
from quantivista.acquisition.router import Attempt, Router
from quantivista.clock import TestClock
from quantivista.errors import (
    CircuitOpenError,
    EntitlementError,
    NotFoundError,
    QuotaExhaustedError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.providers.base import BarRequest
from quantivista.testing.fake_providers import FakeProvider, Outcome, capabilities

MakeFake = Callable[..., FakeProvider]


@pytest.fixture
def clock() -> TestClock:
    """Return a test clock at 2024-06-03 14:30 UTC."""
    return TestClock(datetime(2024, 6, 3, 14, 30, tzinfo=UTC))


@pytest.fixture
def fake(clock: TestClock) -> MakeFake:
    """Return a builder of fake providers on the test clock."""

    def build(name: str, *schedule: Outcome, **kw: object) -> FakeProvider:
        return FakeProvider(name, schedule or (None,), clock=clock, **kw)  # type: ignore[arg-type]

    return build


DOWN = TransientProviderError("503 service unavailable", provider="x")
OLD = BarRequest.of("AAPL", "2020-01-02", "2020-01-31")


def _req(symbol: str = "AAPL") -> BarRequest:
    return BarRequest.of(symbol, "2020-01-02", "2020-01-31")


def test_plain_router_keeps_the_old_api(fake: MakeFake) -> None:
    down, up = fake("down", DOWN), fake("up")
    result = Router([down, up], retry=RetryPolicy(max_attempts=1)).fetch(OLD)
    assert result.provider == "up"
    attempts = result.metadata["attempts"]
    assert [(a.provider, a.ok, a.kind) for a in attempts] == [
        ("down", False, "TransientProviderError"),
        ("up", True, None),
    ]
    assert all(isinstance(a, Attempt) for a in attempts)


def test_failover_after_retries_with_exponential_backoff(fake: MakeFake, clock: TestClock) -> None:
    down, up = fake("down", DOWN), fake("up")
    policy = RetryPolicy(max_attempts=3, base_delay_s=1.0, jitter=0.5)
    router = Router([down, up], retry=policy, clock=clock, rng=random.Random(1))
    start = clock.monotonic()
    result = router.fetch(OLD)
    assert result.provider == "up"
    assert len(down.calls) == 3 and len(up.calls) == 1
    waits = [a.waited_s for a in result.metadata["attempts"] if a.provider == "down"]
    assert 0.5 <= waits[0] <= 1.0  # 1 s with up to half jittered away
    assert 1.0 <= waits[1] <= 2.0  # doubled
    assert waits[2] == 0  # no wait after the last try: fail over at once
    assert clock.monotonic() - start == pytest.approx(sum(waits))


def test_transient_error_then_success_stays_on_the_provider(
    fake: MakeFake, clock: TestClock
) -> None:
    flaky, backup = fake("flaky", DOWN, None), fake("backup")
    result = Router([flaky, backup], clock=clock, retry=RetryPolicy()).fetch(OLD)
    assert result.provider == "flaky"
    assert backup.calls == []
    assert [a.ok for a in result.metadata["attempts"]] == [False, True]


def test_retry_after_is_honoured(fake: MakeFake, clock: TestClock) -> None:
    limited = fake("limited", RateLimitedError("429", retry_after_s=7.0), None)
    router = Router([limited], clock=clock, retry=RetryPolicy(base_delay_s=0.1))
    start = clock.monotonic()
    assert router.fetch(OLD).provider == "limited"
    assert clock.monotonic() - start == pytest.approx(7.0)


def test_retry_after_longer_than_allowed_fails_over_without_waiting(
    fake: MakeFake, clock: TestClock
) -> None:
    limited = fake("limited", RateLimitedError("429", retry_after_s=3600.0))
    backup = fake("backup")
    router = Router([limited, backup], clock=clock, retry=RetryPolicy(max_retry_after_s=60))
    start = clock.monotonic()
    assert router.fetch(OLD).provider == "backup"
    assert clock.monotonic() == start
    assert len(limited.calls) == 1


@pytest.mark.parametrize(
    "error",
    [SymbolNotFoundError("unknown symbol"), EntitlementError("premium endpoint")],
)
def test_permanent_errors_move_on_without_retrying(
    fake: MakeFake, clock: TestClock, error: Exception
) -> None:
    first, second = fake("first", error), fake("second")
    start = clock.monotonic()
    result = Router([first, second], clock=clock).fetch(OLD)
    assert result.provider == "second"
    assert len(first.calls) == 1
    assert clock.monotonic() == start


def test_all_failing_raises_the_last_error_with_every_attempt(
    fake: MakeFake, clock: TestClock
) -> None:
    a = fake("a", SymbolNotFoundError("unknown", provider="a"))
    b = fake("b", DOWN)
    router = Router([a, b], clock=clock, retry=RetryPolicy(max_attempts=2, base_delay_s=0))
    with pytest.raises(TransientProviderError) as info:
        router.fetch(OLD)
    assert info.value.context["attempts"] == [
        "a: SymbolNotFoundError",
        "b: TransientProviderError",
        "b: TransientProviderError",
    ]


def test_no_capable_provider_is_not_found(fake: MakeFake) -> None:
    with pytest.raises(NotFoundError):
        Router([fake("daily")]).fetch(BarRequest.of("AAPL", "2020-01-02", "2020-01-03", "1h"))


def test_breaker_opens_after_five_failures_and_half_opens_after_30s(
    fake: MakeFake, clock: TestClock
) -> None:
    down, up = fake("down", *([DOWN] * 6), None), fake("up")
    breakers = Breakers(clock)
    router = Router(
        [down, up],
        breakers=breakers,
        clock=clock,
        ordering="given",
        retry=RetryPolicy(max_attempts=1),
    )
    for i in range(5):
        assert router.fetch(_req(f"S{i}")).provider == "up"
    assert breakers.get("down").state is BreakerState.OPEN
    assert len(down.calls) == 5
    result = router.fetch(_req("S5"))
    assert len(down.calls) == 5  # the open breaker sent the request straight to the backup
    assert [(a.provider, a.kind) for a in result.metadata["attempts"]] == [("up", None)]
    clock.advance(30)
    assert breakers.get("down").state is BreakerState.HALF_OPEN
    router.fetch(_req("S6"))  # the probe fails (6th scheduled failure): open again
    assert len(down.calls) == 6
    assert breakers.get("down").state is BreakerState.OPEN
    clock.advance(30)
    assert router.fetch(_req("S7")).provider == "down"  # the probe succeeds
    assert breakers.get("down").state is BreakerState.CLOSED
    assert [t.to_state.value for t in breakers.get("down").transitions] == [
        "open",
        "half_open",
        "open",
        "half_open",
        "closed",
    ]


def test_breaker_opening_mid_retries_stops_retrying(fake: MakeFake, clock: TestClock) -> None:
    down, up = fake("down", DOWN), fake("up")
    breakers = Breakers(clock, failure_threshold=2)
    router = Router([down, up], breakers=breakers, clock=clock, retry=RetryPolicy(max_attempts=5))
    result = router.fetch(OLD)
    assert len(down.calls) == 2
    assert [a.kind for a in result.metadata["attempts"]][-2:] == ["CircuitOpenError", None]


def test_router_acquires_tokens_for_providers_without_a_gate(
    fake: MakeFake, clock: TestClock
) -> None:
    p = fake("slowvendor")
    limiter = RateLimiter({"slowvendor": ["2/minute"]}, clock=clock)
    router = Router([p], limiter=limiter, clock=clock, single_flight=False)
    start = clock.monotonic()
    for i in range(3):
        router.fetch(_req(f"S{i}"))
    assert clock.monotonic() - start == pytest.approx(60.0, abs=1e-3)


def test_router_leaves_gating_to_providers_that_have_a_gate(
    fake: MakeFake, clock: TestClock
) -> None:
    p = fake("http")
    limiter = RateLimiter({"http": ["1/day"]}, clock=clock)
    p.gates_requests = True  # type: ignore[misc]  # as HTTP clients declare
    p.gate = limiter
    router = Router([p], limiter=limiter, clock=clock)
    router.fetch(_req("A"))
    router.fetch(_req("B"))  # would raise if the router took a token too
    assert limiter.usage("http")[0].used == 0


def test_spent_quota_fails_over_without_retry(fake: MakeFake, clock: TestClock) -> None:
    capped, backup = fake("capped"), fake("backup")
    limiter = RateLimiter({"capped": ["1/day"]}, clock=clock, max_wait_s=60)
    router = Router([capped, backup], limiter=limiter, clock=clock, ordering="given")
    assert router.fetch(_req("A")).provider == "capped"
    result = router.fetch(_req("B"))
    assert result.provider == "backup"
    assert result.metadata["attempts"][0].kind == QuotaExhaustedError.__name__
    assert len(capped.calls) == 1


def test_single_flight_shares_one_call_among_threads(fake: MakeFake) -> None:
    release = threading.Event()
    slow = fake("slow", block=release)
    router = Router([slow])
    results: list[object] = []

    def call() -> None:
        results.append(router.fetch(OLD))

    leader = threading.Thread(target=call)
    leader.start()
    assert slow.entered.wait(5)
    followers = [threading.Thread(target=call) for _ in range(7)]
    for t in followers:
        t.start()
    time.sleep(0.1)  # let the followers reach the in-flight call
    release.set()
    for t in [leader, *followers]:
        t.join(5)
    assert len(slow.calls) == 1
    assert len(results) == 8
    assert sum(bool(r.metadata.get("shared")) for r in results) == 7  # type: ignore[attr-defined]


def test_single_flight_shares_errors_too(fake: MakeFake) -> None:
    release = threading.Event()
    bad = fake("bad", SymbolNotFoundError("nope"), block=release)
    router = Router([bad])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            router.fetch(OLD)
        except SymbolNotFoundError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    threads[0].start()
    assert bad.entered.wait(5)
    for t in threads[1:]:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in threads:
        t.join(5)
    assert len(errors) == 3 and len(bad.calls) == 1


def test_cache_hit_avoids_a_call(fake: MakeFake, clock: TestClock) -> None:
    p = fake("p")
    router = Router([p], clock=clock, cache=ResponseCache())
    first = router.fetch(OLD)
    second = router.fetch(OLD)
    assert len(p.calls) == 1
    assert second.metadata["cached"] is True
    assert second.bars.equals(first.bars)
    router.fetch(_req("MSFT"))  # another request is another key
    assert len(p.calls) == 2


def test_recent_data_expires_fast_and_history_stays(fake: MakeFake, clock: TestClock) -> None:
    p = fake("p")
    cache = ResponseCache(recent_ttl_s=300, history_ttl_s=86400 * 7, settled_after_days=3)
    router = Router([p], clock=clock, cache=cache)
    today = clock.now().date()
    recent = BarRequest.of("AAPL", today - timedelta(days=5), today)
    router.fetch(recent)
    router.fetch(OLD)
    clock.advance(301)
    router.fetch(recent)  # expired: fetched again
    router.fetch(OLD)  # settled history: still cached
    assert [c.symbol for c in p.calls] == ["AAPL", "AAPL", "AAPL"]
    assert p.calls[2] == recent
    assert cache.ttl_s(OLD, clock.now()) == 86400 * 7


def test_cache_is_bounded(fake: MakeFake, clock: TestClock) -> None:
    cache = ResponseCache(max_entries=2)
    router = Router([fake("p")], clock=clock, cache=cache)
    for s in "ABC":
        router.fetch(_req(s))
    assert len(cache) == 2
    assert cache.get(_req("A"), clock.now()) is None


def test_free_and_preferred_providers_come_first(fake: MakeFake) -> None:
    paid = fake("paid", caps=capabilities(cost=0.01, priority=1))
    backup = fake("backup", caps=capabilities(priority=500))
    main = fake("main", caps=capabilities(priority=10))
    router = Router([paid, backup, main], ordering="auto")
    assert [p.name for p in router.candidates(OLD)] == ["main", "backup", "paid"]
    assert router.fetch(OLD).provider == "main"
    assert Router([paid, backup, main]).fetch(OLD).provider == "paid"  # given order


def test_load_is_balanced_across_equivalent_providers(fake: MakeFake, clock: TestClock) -> None:
    a, b = fake("a"), fake("b")
    router = Router([a, b], clock=clock, ordering="auto")
    for i in range(6):
        router.fetch(_req(f"S{i}"))
    assert (len(a.calls), len(b.calls)) == (3, 3)


def test_unhealthy_provider_drops_behind_a_healthy_equivalent(
    fake: MakeFake, clock: TestClock
) -> None:
    flaky = fake("flaky", *([DOWN] * 4), None)
    steady = fake("steady")
    router = Router([flaky, steady], clock=clock, ordering="auto", single_flight=False)
    for i in range(4):
        router.fetch(_req(f"S{i}"))
    assert router.health.score("flaky") < router.health.score("steady")
    assert [p.name for p in router.candidates(OLD)] == ["steady", "flaky"]


def test_open_breaker_goes_last_even_in_given_order(fake: MakeFake, clock: TestClock) -> None:
    a, b = fake("a"), fake("b")
    breakers = Breakers(clock)
    breakers.get("a").record_failure("x")
    for _ in range(4):
        breakers.get("a").record_failure("x")
    router = Router([a, b], breakers=breakers, ordering="given")
    assert [p.name for p in router.candidates(OLD)] == ["b", "a"]
    with pytest.raises(CircuitOpenError):
        breakers.get("a").before_call()


def test_latency_is_measured_on_the_clock(fake: MakeFake, clock: TestClock) -> None:
    slow = FakeProvider("slow", (None,), clock=clock, latency_s=2.5)
    result = Router([slow], clock=clock).fetch(OLD)
    assert result.metadata["attempts"][0].latency_s == pytest.approx(2.5)
    assert router_health(slow, clock) > 0


def router_health(provider: FakeProvider, clock: TestClock) -> float:
    router = Router([provider], clock=clock)
    router.fetch(_req("X"))
    return router.health.get("slow").latency_ewma_s


def test_vendor_quota_exhaustion_suspends_the_provider_until_reset(
    fake: MakeFake, clock: TestClock
) -> None:
    spent = fake("spent", QuotaExhaustedError("25 requests per day", retry_after_s=100.0), None)
    backup = fake("backup")
    router = Router([spent, backup], clock=clock, ordering="given")
    assert router.fetch(_req("A")).provider == "backup"
    result = router.fetch(_req("B"))
    assert result.provider == "backup"
    assert len(spent.calls) == 1  # suspended: not asked again
    assert [p.name for p in router.candidates(OLD)] == ["backup", "spent"]
    clock.advance(100)
    assert router.fetch(_req("C")).provider == "spent"


def test_a_provider_bug_propagates_and_counts_against_its_health(
    fake: MakeFake, clock: TestClock
) -> None:
    buggy, backup = fake("buggy", KeyError("close")), fake("backup")
    breakers = Breakers(clock, failure_threshold=1)
    with pytest.raises(KeyError):
        Router([buggy, backup], clock=clock, breakers=breakers).fetch(OLD)
    assert backup.calls == []  # a bug is not hidden behind a failover
    assert breakers.get("buggy").state is BreakerState.OPEN
