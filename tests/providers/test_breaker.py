"""Circuit breaker: opening, cool-down, half-open probes, timeouts, observation."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.acquisition.breaker import (
    Breakers,
    BreakerState,
    CircuitBreaker,
    Transition,
    counts_as_failure,
)
from quantivista.clock import TestClock
from quantivista.config import BreakerSettings
from quantivista.errors import (
    CircuitOpenError,
    EntitlementError,
    MalformedResponseError,
    QuotaExhaustedError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)


def _fail() -> None:
    raise TransientProviderError("boom", provider="p")


def _trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(TransientProviderError):
            breaker.call(_fail)


def test_opens_after_five_consecutive_failures_and_rejects_calls() -> None:
    clock = TestClock()
    seen: list[Transition] = []
    breaker = CircuitBreaker("p", clock=clock, listener=seen.append)
    _trip(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    _trip(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    calls = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: calls.append(1))
    assert calls == []  # the function never ran
    assert info.value.context["retry_in_s"] == pytest.approx(30.0)
    assert [(t.from_state, t.to_state) for t in seen] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert seen[0].at == clock.now()
    assert breaker.counters() == {
        "calls": 5,
        "successes": 0,
        "failures": 5,
        "rejected": 1,
        "consecutive_failures": 5,
    }


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker("p", clock=TestClock())
    _trip(breaker, 4)
    assert breaker.call(lambda: 42) == 42
    _trip(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_half_opens_after_thirty_seconds_and_a_good_probe_closes() -> None:
    clock = TestClock()
    breaker = CircuitBreaker("p", clock=clock)
    _trip(breaker, 5)
    clock.advance(29.9)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in_s() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert [t.to_state for t in breaker.transitions] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    stamps = [t.at for t in breaker.transitions]
    assert (stamps[1] - stamps[0]).total_seconds() == pytest.approx(30.0)


def test_failed_probe_reopens_for_another_cool_down() -> None:
    clock = TestClock()
    breaker = CircuitBreaker("p", clock=clock, reset_timeout_s=30)
    _trip(breaker, 5)
    clock.advance(30)
    _trip(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    clock.advance(29)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_lets_only_one_probe_through() -> None:
    clock = TestClock()
    breaker = CircuitBreaker("p", clock=clock)
    _trip(breaker, 5)
    clock.advance(30)
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.record_success()
    breaker.before_call()  # closed again: everyone through


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (TransientProviderError("x"), True),
        (RateLimitedError("x"), True),
        (MalformedResponseError("x"), True),
        (RuntimeError("bug"), True),
        (SymbolNotFoundError("x"), False),
        (EntitlementError("x"), False),
        (QuotaExhaustedError("x"), False),
    ],
)
def test_only_health_failures_count(error: Exception, counts: bool) -> None:
    assert counts_as_failure(error) is counts


def test_permanent_answers_do_not_open_the_breaker() -> None:
    breaker = CircuitBreaker("p", clock=TestClock(), failure_threshold=2)

    def unknown() -> None:
        raise SymbolNotFoundError("no such symbol", provider="p")

    for _ in range(5):
        with pytest.raises(SymbolNotFoundError):
            breaker.call(unknown)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.counters()["failures"] == 0


def test_call_timeout_counts_as_failure() -> None:
    breaker = CircuitBreaker("slow", clock=TestClock(), failure_threshold=1)
    release = threading.Event()
    with pytest.raises(TransientProviderError, match=r"did not answer within 0\.05 s"):
        breaker.call(release.wait, timeout_s=0.05)
    release.set()
    assert breaker.state is BreakerState.OPEN


def test_call_with_timeout_returns_value_and_reraises_errors() -> None:
    breaker = CircuitBreaker("p", clock=TestClock())
    assert breaker.call(lambda: 7, timeout_s=5) == 7
    with pytest.raises(TransientProviderError):
        breaker.call(_fail, timeout_s=5)
    assert breaker.counters()["consecutive_failures"] == 1


def test_breakers_from_settings_share_listeners_and_report_transitions() -> None:
    clock = TestClock()
    breakers = Breakers.from_settings(
        BreakerSettings(failure_threshold=2, reset_timeout_s=10), clock
    )
    seen: list[Transition] = []
    breakers.add_listener(seen.append)
    a, b = breakers.get("A"), breakers.get("b")
    assert breakers.get("a") is a
    _trip(a, 2)
    clock.advance(1)
    _trip(b, 2)
    assert [(t.provider, t.to_state) for t in seen] == [
        ("a", BreakerState.OPEN),
        ("b", BreakerState.OPEN),
    ]
    assert [t.provider for t in breakers.transitions()] == ["a", "b"]
    a.reset()
    assert a.state is BreakerState.CLOSED


@settings(max_examples=80, deadline=None)
@given(
    ops=st.lists(
        st.one_of(st.just("ok"), st.just("fail"), st.floats(min_value=0.5, max_value=40.0)),
        max_size=60,
    ),
    threshold=st.integers(min_value=1, max_value=6),
)
def test_breaker_follows_its_state_machine(ops: list[str | float], threshold: int) -> None:
    clock = TestClock()
    breaker = CircuitBreaker("p", clock=clock, failure_threshold=threshold, reset_timeout_s=30)
    streak = 0  # consecutive failures seen while calls were admitted
    for op in ops:
        if isinstance(op, float):
            clock.advance(op)
            continue
        before = breaker.state
        try:
            breaker.call(_fail if op == "fail" else (lambda: None))
        except CircuitOpenError:
            assert before is BreakerState.OPEN  # refused only while open
            continue
        except TransientProviderError:
            pass
        assert before is not BreakerState.OPEN  # an open breaker never lets a call through
        if op == "ok":
            streak = 0
            assert breaker.state is BreakerState.CLOSED
        else:
            streak += 1
            opened = before is BreakerState.HALF_OPEN or streak >= threshold
            assert breaker.state is (BreakerState.OPEN if opened else BreakerState.CLOSED)
    opened_at = [t.at for t in breaker.transitions if t.to_state is BreakerState.OPEN]
    half_at = [t.at for t in breaker.transitions if t.to_state is BreakerState.HALF_OPEN]
    for opened, half in zip(opened_at, half_at, strict=False):
        assert (half - opened).total_seconds() >= 30 - 1e-6  # never probes before the cool-down


def test_a_call_admitted_before_the_breaker_opened_does_not_close_it() -> None:
    # concurrent fetches: one is in flight while five others fail and open the breaker
    clock = TestClock()
    breaker = CircuitBreaker("p", clock=clock)
    started, finish = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        finish.wait(5)
        return "late answer"

    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(breaker.call(slow)))
    worker.start()
    assert started.wait(5)
    _trip(breaker, 5)
    finish.set()
    worker.join(5)
    assert results == ["late answer"]
    assert breaker.state is BreakerState.OPEN  # the cool-down still runs; no reclose
    clock.advance(30)
    probe = breaker.before_call()
    assert probe is True
    breaker.record_success(probe=False)  # another straggler: only the probe decides
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # the probe slot is still taken
    breaker.record_success(probe=probe)
    assert [(str(t.from_state), str(t.to_state)) for t in breaker.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
