"""Rate limiter: window parsing, queueing through the clock, quotas, in-memory and Redis."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from bisect import bisect_right
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.acquisition.limits import MemoryBackend, Rate, RateLimiter, RedisBackend
from quantivista.clock import SystemClock, TestClock
from quantivista.config import ResilienceSettings
from quantivista.errors import ConfigurationError, InvalidInputError, QuotaExhaustedError

from .conftest import drop_redis_keys


def _max_in_window(times: list[float], period: float) -> int:
    """Return the largest number of times inside any half-open window (t - period, t]."""
    times = sorted(times)
    best = 0
    for t in times:  # the fullest window ends at some grant time
        best = max(best, bisect_right(times, t) - bisect_right(times, t - period))
    return best


# -- parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("5/minute", 5, 60.0),
        ("25/day", 25, 86400.0),
        ("1/second", 1, 1.0),
        ("50/hour", 50, 3600.0),
        ("100/10s", 100, 10.0),
        ("8 / minutes", 8, 60.0),
        ("4/0.5s", 4, 0.5),
    ],
)
def test_rate_parse_reads_count_and_period(text: str, limit: int, period: float) -> None:
    assert Rate.parse(text) == Rate(limit, period)


@pytest.mark.parametrize("text", ["", "5", "5/fortnight", "x/minute", "0/minute", "5/0s"])
def test_rate_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigurationError):
        Rate.parse(text)


def test_rate_str_round_trips() -> None:
    for text in ["5/minute", "25/day", "1/second", "50/hour", "100/10s"]:
        assert str(Rate.parse(text)) == text


# -- in-memory behaviour ---------------------------------------------------------------------
def test_acquire_queues_until_the_minute_window_has_room() -> None:
    clock = TestClock()
    limiter = RateLimiter({"polygon": ["5/minute"]}, clock=clock)
    start = clock.monotonic()
    for _ in range(5):
        limiter.acquire("polygon")
    assert clock.monotonic() == start  # the first five go through at once
    limiter.acquire("polygon")
    assert clock.monotonic() - start == pytest.approx(60.0, abs=1e-5)


def test_burst_window_spaces_calls_one_second_apart() -> None:
    clock = TestClock()
    limiter = RateLimiter({"av": ["1/second", "5/minute"]}, clock=clock)
    times = []
    for _ in range(6):
        limiter.acquire("av")
        times.append(clock.monotonic())
    assert times[:5] == pytest.approx([0, 1, 2, 3, 4], abs=1e-5)
    assert times[5] == pytest.approx(60.0, abs=1e-5)


def test_spent_daily_quota_raises_without_sleeping() -> None:
    clock = TestClock()
    limiter = RateLimiter({"av": ["25/day"]}, clock=clock, max_wait_s=120)
    for _ in range(25):
        limiter.acquire("av")
    before = clock.monotonic()
    with pytest.raises(QuotaExhaustedError) as info:
        limiter.acquire("av")
    assert clock.monotonic() == before
    assert info.value.provider == "av"
    assert info.value.context["retry_after_s"] == pytest.approx(86400.0, abs=1e-3)
    clock.advance(86400)
    limiter.acquire("av")  # the day has passed: the window has room again


def test_unlimited_provider_never_waits() -> None:
    clock = TestClock()
    limiter = RateLimiter({"polygon": ["5/minute"]}, clock=clock)
    for _ in range(1000):
        limiter.acquire("synthetic")
    assert clock.monotonic() == 0


def test_cost_counts_several_calls_and_too_big_cost_is_rejected() -> None:
    clock = TestClock()
    limiter = RateLimiter({"finnhub": ["60/minute"]}, clock=clock)
    limiter.acquire("finnhub", cost=10)
    assert limiter.usage("finnhub")[0].used == 10
    with pytest.raises(InvalidInputError):
        limiter.acquire("finnhub", cost=61)
    with pytest.raises(InvalidInputError):
        limiter.acquire("finnhub", cost=0)


def test_usage_reports_used_left_and_reset_per_window() -> None:
    clock = TestClock()
    limiter = RateLimiter({"av": ["5/minute", "25/day"]}, clock=clock)
    for _ in range(3):
        limiter.acquire("av")
    clock.advance(10)
    minute, day = limiter.usage("av")
    assert (minute.used, minute.left, minute.resets_in_s) == (3, 2, pytest.approx(50.0))
    assert (day.used, day.left) == (3, 22)
    frame = limiter.usage_frame()
    assert frame.columns == ["provider", "window", "limit", "used", "left", "resets_in_s"]
    assert frame.filter(frame["window"] == "25/day")["left"].to_list() == [22]
    limiter.reset("av")
    assert limiter.usage("av")[0].used == 0


def test_from_settings_uses_vendor_defaults() -> None:
    limiter = RateLimiter.from_settings(ResilienceSettings(), TestClock())
    assert [str(r) for r in limiter.rates("alpha_vantage")] == ["1/second", "5/minute", "25/day"]
    assert [str(r) for r in limiter.rates("polygon")] == ["5/minute"]
    assert isinstance(limiter.backend, MemoryBackend)


def test_threads_share_one_quota_without_exceeding_it() -> None:
    clock = TestClock()
    limiter = RateLimiter({"p": ["3/second", "10/minute"]}, clock=clock)
    grants: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            limiter.acquire("p")
            with lock:
                grants.append(clock.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(grants) == 20
    # 20 calls at 10 per minute: the last ten had to wait for the first minute to pass
    assert clock.monotonic() >= 60.0
    assert limiter.usage("p")[1].used <= 10


SCHEDULES = st.lists(
    st.tuples(st.floats(min_value=0, max_value=30), st.integers(min_value=1, max_value=3)),
    min_size=1,
    max_size=60,
)
WINDOWS = st.lists(
    st.tuples(st.integers(3, 6), st.sampled_from([1.0, 2.5, 10.0, 60.0])),
    min_size=1,
    max_size=3,
)


def _run_schedule(
    limiter: RateLimiter, clock: TestClock, steps: list[tuple[float, int]]
) -> list[float]:
    grants: list[float] = []
    for gap, cost in steps:
        clock.advance(gap)
        limiter.acquire("p", cost)
        grants.extend([clock.now().timestamp()] * cost)
    return grants


@settings(max_examples=60, deadline=None)
@given(steps=SCHEDULES, rates=WINDOWS)
def test_limiter_never_exceeds_any_window(
    steps: list[tuple[float, int]], rates: list[tuple[int, float]]
) -> None:
    clock = TestClock()
    windows = [Rate(limit, period) for limit, period in rates]
    limiter = RateLimiter({"p": windows}, clock=clock, max_wait_s=1e9)
    grants = _run_schedule(limiter, clock, steps)
    for rate in windows:
        # datetimes carry microseconds: allow that much rounding at the window edge
        assert _max_in_window(grants, rate.period_s - 2e-6) <= rate.limit


class _RecordingBackend(MemoryBackend):
    """Remembers the time of every granted call, as the backend saw it (inside its lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.granted: list[float] = []
        self._seen = threading.local()

    def _at(self, now: float) -> float:
        self._seen.now = super()._at(now)
        return float(self._seen.now)

    def try_acquire(
        self,
        provider: str,
        rates: Sequence[Rate],
        now: float,
        cost: int,
        *,
        token: str = "",
        hold_s: float = 0.0,
    ) -> float:
        wait = super().try_acquire(provider, rates, now, cost, token=token, hold_s=hold_s)
        if wait == 0:
            self.granted.extend([self._seen.now] * cost)
        return wait


def test_real_threads_on_the_real_clock_never_exceed_the_window() -> None:
    backend = _RecordingBackend()
    limiter = RateLimiter({"p": ["5/0.2s"]}, clock=SystemClock(), backend=backend)

    def worker() -> None:
        for _ in range(6):
            limiter.acquire("p")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(backend.granted) == 24
    assert _max_in_window(backend.granted, 0.2) <= 5


class _SignallingClock(TestClock):
    """A test clock that says when it was read."""

    def __init__(self) -> None:
        super().__init__()
        self.read = threading.Event()

    def monotonic(self) -> float:
        self.read.set()
        return super().monotonic()


def test_a_caller_that_waited_for_the_lock_is_stamped_when_it_gets_it() -> None:
    """A thread reads the clock, then waits half a second for the lock another holds: its
    call is granted at 1.5, so the window is full until 2.5, not until 2.0."""
    clock = _SignallingClock()
    backend = MemoryBackend()
    limiter = RateLimiter({"p": ["1/second"]}, clock=clock, backend=backend)
    limiter.acquire("p")  # at 0: the window is full until 1.0
    clock.advance(1.0)
    waits: list[float] = []
    with backend._lock:  # another caller holds the lock...
        clock.read.clear()
        late = threading.Thread(target=lambda: waits.append(limiter.try_acquire("p")))
        late.start()
        assert clock.read.wait(10)  # ...while this one reads the clock (1.0) and queues
        clock.advance(0.5)
    late.join(10)
    assert waits == [0.0]  # granted at 1.5
    clock.advance(0.5)
    assert limiter.try_acquire("p") == pytest.approx(0.5)
    assert limiter.usage("p")[0].resets_in_s == pytest.approx(0.5)


def test_one_in_memory_backend_reads_one_clock() -> None:
    backend = MemoryBackend()
    clock = TestClock()
    RateLimiter({"p": ["1/second"]}, clock=clock, backend=backend)
    RateLimiter({"q": ["1/second"]}, clock=clock, backend=backend)  # the same clock: fine
    with pytest.raises(ConfigurationError, match="one clock"):
        RateLimiter({"p": ["1/second"]}, clock=TestClock(), backend=backend)


# -- Redis -------------------------------------------------------------------------------------
@pytest.mark.redis
def test_redis_backend_queues_and_reports_like_memory(redis_url: str, redis_prefix: str) -> None:
    clock = TestClock()
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    limiter = RateLimiter({"polygon": ["5/minute", "7/day"]}, clock=clock, backend=backend)
    for _ in range(5):
        limiter.acquire("polygon")
    assert clock.monotonic() == 0
    limiter.acquire("polygon")
    assert clock.monotonic() == pytest.approx(60.0, abs=1e-3)
    minute, day = limiter.usage("polygon")
    assert (minute.used, minute.left, day.used, day.left) == (1, 4, 6, 1)
    limiter.acquire("polygon")
    with pytest.raises(QuotaExhaustedError):
        limiter.acquire("polygon")
    limiter.reset("polygon")
    assert limiter.usage("polygon")[1].used == 0


@pytest.mark.redis
def test_redis_limiters_in_one_process_share_the_quota(redis_url: str, redis_prefix: str) -> None:
    clock = TestClock()
    a = RateLimiter(
        {"p": ["3/day"]}, clock=clock, backend=RedisBackend(redis_url, prefix=redis_prefix)
    )
    b = RateLimiter(
        {"p": ["3/day"]}, clock=clock, backend=RedisBackend(redis_url, prefix=redis_prefix)
    )
    a.acquire("p")
    b.acquire("p")
    a.acquire("p")
    with pytest.raises(QuotaExhaustedError):
        b.acquire("p")


def _redis_worker(url: str, prefix: str, calls: int) -> None:
    limiter = RateLimiter(
        {"p": ["4/0.5s", "1000/hour"]},
        clock=SystemClock(),
        backend=RedisBackend(url, prefix=prefix),
        max_wait_s=30,
    )
    for _ in range(calls):
        limiter.acquire("p")


@pytest.mark.redis
def test_two_processes_never_exceed_one_shared_quota(redis_url: str, redis_prefix: str) -> None:
    import redis

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_redis_worker, args=(redis_url, redis_prefix, 8)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # the hour window keeps every grant's timestamp: check the half-second window on them
    client = redis.Redis.from_url(redis_url)
    hour_key = f"{redis_prefix}:p:1000/3600"
    times = [score for _, score in client.zrange(hour_key, 0, -1, withscores=True)]
    assert len(times) == 16
    assert _max_in_window(times, 0.5) <= 4
    assert max(times) - min(times) >= 1.5  # 16 calls at 4 per half second need >= 1.5 s


def test_margin_lengthens_every_window_but_reports_the_vendor_rate() -> None:
    clock = TestClock()
    limiter = RateLimiter({"polygon": ["5/minute"]}, clock=clock, margin_s=0.1)
    for _ in range(6):
        limiter.acquire("polygon")
    assert clock.monotonic() == pytest.approx(60.1, abs=1e-5)
    (usage,) = limiter.usage("polygon")
    assert (str(usage.rate), usage.used, usage.left) == ("5/minute", 1, 4)


def test_settings_reject_a_bad_limit_string_up_front() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="5/fortnight"):
        ResilienceSettings(limits={"polygon": ["5/fortnight"]})
    limits = ResilienceSettings(limits={"Polygon": ["100/minute"], "stooq": []}).limits
    assert limits["polygon"] == ["100/minute"]
    assert limits["stooq"] == []  # lifted on purpose
    assert limits["alpha_vantage"] == ["1/second", "5/minute", "25/day"]  # default kept


@pytest.mark.redis
@settings(max_examples=15, deadline=None)
@given(steps=SCHEDULES, rates=WINDOWS)
def test_redis_limiter_never_exceeds_any_window(
    redis_url: str, steps: list[tuple[float, int]], rates: list[tuple[int, float]]
) -> None:
    prefix = f"qv-test:{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(redis_url, prefix=prefix)
    clock = TestClock()
    windows = [Rate(limit, period) for limit, period in rates]
    limiter = RateLimiter({"p": windows}, clock=clock, backend=backend, max_wait_s=1e9)
    try:
        grants = _run_schedule(limiter, clock, steps)
    finally:
        backend.reset()
        limiter.close()
    for rate in windows:
        assert _max_in_window(grants, rate.period_s - 2e-6) <= rate.limit


# -- take: acquire and report in one step (the API's per-request call) -------------------------
def _take_matches_acquire_then_usage(backend_a: object, backend_b: object, steps: list[float],
                                     costs: list[int]) -> None:  # fmt: skip
    clock = TestClock()
    rates = ["3/second", "5/10s", "8/minute"]
    taking = RateLimiter({"p": rates}, clock=clock, backend=backend_a)  # type: ignore[arg-type]
    stepping = RateLimiter({"p": rates}, clock=clock, backend=backend_b)  # type: ignore[arg-type]
    for step, cost in zip(steps, costs, strict=False):
        clock.advance(step)
        wait, tightest = taking.take("P", cost)
        assert wait == pytest.approx(stepping.try_acquire("p", cost), abs=1e-9)
        usage = stepping.usage("p")
        assert tightest is not None
        fewest = min(u.left for u in usage)
        assert tightest.left == fewest
        expected = next(u for u in usage if u.left == fewest)
        assert tightest[:4] == expected[:4]  # provider, rate, used, left
        assert tightest.resets_in_s == pytest.approx(expected.resets_in_s, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=4), min_size=1, max_size=40),
    st.lists(st.integers(min_value=1, max_value=3), min_size=40, max_size=40),
)
def test_take_is_try_acquire_then_the_tightest_usage(steps: list[float], costs: list[int]) -> None:
    _take_matches_acquire_then_usage(MemoryBackend(), MemoryBackend(), steps, costs)


def test_take_without_limits_and_after_a_reset() -> None:
    clock = TestClock()
    limiter = RateLimiter({"p": ["2/minute"]}, clock=clock)
    assert limiter.take("free") == (0.0, None)
    limiter.take("p")
    wait, usage = limiter.take("p")
    assert wait == 0 and usage is not None and (usage.used, usage.left) == (2, 0)
    assert limiter.take("p")[0] == pytest.approx(60.0)
    limiter.reset("p")  # forgets the logs `take` holds on to as well
    assert limiter.take("p")[1] == limiter.usage("p")[0]
    assert limiter.usage("p")[0].used == 1
    limiter.set_limits("p", ["1/minute"])  # new windows: new logs
    assert limiter.take("p")[0] == 0 and limiter.take("p")[0] > 0


@pytest.mark.redis
@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=4), min_size=1, max_size=25),
    st.lists(st.integers(min_value=1, max_value=3), min_size=25, max_size=25),
)
def test_redis_take_is_try_acquire_then_the_tightest_usage(
    redis_url: str, steps: list[float], costs: list[int]
) -> None:

    prefixes = [f"qv-test:{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        _take_matches_acquire_then_usage(
            RedisBackend(redis_url, prefix=prefixes[0]),
            RedisBackend(redis_url, prefix=prefixes[1]),
            steps,
            costs,
        )
    finally:
        for prefix in prefixes:
            drop_redis_keys(redis_url, prefix)


# -- calls in flight: the vendor counts arrivals, not grants ----------------------------------
@pytest.fixture(params=["memory", "redis"])
def limiter_backend(request: pytest.FixtureRequest) -> Iterator[MemoryBackend | RedisBackend]:
    """Return an empty backend of each kind in turn (Redis: under the test's own prefix)."""
    if request.param == "memory":
        yield MemoryBackend()
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    backend = RedisBackend(url, prefix=prefix)
    yield backend
    backend.close()


def _delayed_arrivals(limiter: RateLimiter, clock: TestClock, *, hold: bool) -> list[float]:
    """Two 1/1s calls; the first waits 0.9 s between grant and arrival (a loaded machine).

    Return the arrival times the vendor sees. With `hold` the calls go through `call()`.
    """
    arrivals: list[float] = []
    token = "first"
    if hold:
        limiter.acquire("p", token=token, hold_s=30.0)
    else:
        limiter.acquire("p")
    clock.advance(0.9)
    arrivals.append(clock.monotonic())  # the first call reaches the vendor late
    clock.advance(0.1)  # its answer comes back at 1.0
    if hold:
        limiter.settle("p", token)
        with limiter.call("p", hold_s=30.0):
            arrivals.append(clock.monotonic())
    else:
        limiter.acquire("p")
        arrivals.append(clock.monotonic())
    return arrivals


def test_a_call_granted_before_a_late_arrival_would_break_the_window_without_holding() -> None:
    clock = TestClock()
    limiter = RateLimiter({"p": ["1/second"]}, clock=clock)
    first, second = _delayed_arrivals(limiter, clock, hold=False)
    assert second - first < 1.0  # the vendor would count a violation: why calls are held


def test_held_calls_space_arrivals_by_the_answer_time_whatever_the_delay(
    limiter_backend: MemoryBackend | RedisBackend,
) -> None:
    clock = TestClock()
    limiter = RateLimiter({"p": ["1/second"]}, clock=clock, backend=limiter_backend)
    first, second = _delayed_arrivals(limiter, clock, hold=True)
    assert second - first >= 1.0  # granted a window after the first answer (1.0 -> 2.0)
    assert clock.monotonic() == pytest.approx(2.0, abs=0.02)


def test_a_call_in_flight_blocks_its_window_until_settled(
    limiter_backend: MemoryBackend | RedisBackend,
) -> None:
    clock = TestClock()
    limiter = RateLimiter({"p": ["2/second"]}, clock=clock, backend=limiter_backend)
    assert limiter.try_acquire("p", token="a", hold_s=60.0) == 0
    assert limiter.try_acquire("p", token="b", hold_s=60.0) == 0
    clock.advance(5.0)  # long past the window: still in flight, so still inside it
    assert 0 < limiter.try_acquire("p") <= 0.01  # look again shortly, not in 60 s
    limiter.settle("p", "a")
    assert limiter.try_acquire("p") > 0.9  # a left the window only by its answer (t=5)
    clock.advance(1.0)
    assert limiter.try_acquire("p") == 0
    (usage,) = limiter.usage("p")
    assert usage.used == 2  # b (in flight) and the new call


# (now, cost, hold_s, settle afterwards), in the order the callers take the lock
_CALLS = st.tuples(st.floats(0, 100), st.integers(1, 3), st.sampled_from([0.0, 0.5]), st.booleans())


@settings(max_examples=200)
@given(calls=st.lists(_CALLS, min_size=1, max_size=40))
def test_a_granted_call_is_stamped_at_its_own_now_even_when_it_is_earlier_than_others(
    calls: list[tuple[float, int, float, bool]],
) -> None:
    """Callers read the clock before the lock, so their `now`s arrive out of order; each
    granted call's entries stand at its own `now` (+ hold): no other entry moves them."""
    backend, rates = MemoryBackend(), [Rate(5, 10.0), Rate(20, 60.0)]
    for i, (now, cost, hold_s, settle) in enumerate(calls):
        token = f"t{i}"
        if backend.try_acquire("p", rates, now, cost, token=token, hold_s=hold_s) > 0:
            continue
        for rate in rates:
            mine = [score for score, t in backend._logs[("p", rate)] if t == token]
            assert mine == [now + hold_s] * cost
        if settle:
            backend.settle("p", rates, token, now)
