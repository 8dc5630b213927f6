"""The Redis limiter on Redis's clock: hosts whose clocks disagree share one window (issue 17)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from quantivista.acquisition.limits import RateLimiter, RedisBackend
from quantivista.clock import SystemClock
from quantivista.config import ResilienceSettings

pytestmark = pytest.mark.redis


class SkewedClock(SystemClock):
    """A host whose wall clock is `skew_s` off (no NTP)."""

    def __init__(self, skew_s: float) -> None:
        self.skew = timedelta(seconds=skew_s)

    def now(self) -> datetime:
        return super().now() + self.skew


def _hosts(url: str, redis_prefix: str, skews: list[float], *, server: bool) -> list[RateLimiter]:
    return [
        RateLimiter(
            {"p": ["2/10s"]},
            clock=SkewedClock(skew),
            backend=RedisBackend(url, prefix=redis_prefix, server_clock=server),
            max_wait_s=0.5,
        )
        for skew in skews
    ]


def test_a_host_ahead_sees_the_others_calls_on_redis_clock(
    redis_url: str, redis_prefix: str
) -> None:
    here, ahead = _hosts(redis_url, redis_prefix, [0.0, 30.0], server=True)
    assert here.try_acquire("p") == 0
    assert here.try_acquire("p") == 0
    # 30 s ahead on its own clock, the window is still full on Redis's
    wait = ahead.try_acquire("p")
    assert 9.0 < wait <= 10.0


def test_on_the_callers_clocks_the_same_skew_breaks_the_window(
    redis_url: str, redis_prefix: str
) -> None:
    # what the server clock prevents: the host ahead drops the others' calls as expired
    here, ahead = _hosts(redis_url, redis_prefix, [0.0, 30.0], server=False)
    here.try_acquire("p")
    here.try_acquire("p")
    assert ahead.try_acquire("p") == 0  # a third call inside 10 s: a violation


def test_a_host_behind_is_not_blocked_by_calls_it_thinks_are_in_flight(
    redis_url: str, redis_prefix: str
) -> None:
    ahead, behind = _hosts(redis_url, redis_prefix, [20.0, -20.0], server=True)
    with ahead.call("p", hold_s=5.0):
        pass  # answered: settled at Redis's now
    assert behind.try_acquire("p") == 0
    assert behind.try_acquire("p") > 9.0  # two in 10 s, whoever made them


def test_take_and_usage_report_resets_in_the_callers_time(
    redis_url: str, redis_prefix: str
) -> None:
    here, behind = _hosts(redis_url, redis_prefix, [0.0, -45.0], server=True)
    here.acquire("p")
    wait, tightest = behind.take("p")
    assert wait == 0 and tightest is not None
    assert (tightest.used, tightest.left) == (2, 0)
    assert 9.0 < tightest.resets_in_s <= 10.0  # not 55 s: the skew is taken out
    (window,) = behind.usage("p")
    assert window.used == 2 and 9.0 < window.resets_in_s <= 10.0


def test_settings_build_the_limiter_on_the_server_clock(redis_url: str, redis_prefix: str) -> None:
    settings = ResilienceSettings(
        backend="redis", redis_prefix=redis_prefix, limits={"p": ["1/10s"]}
    )
    a = RateLimiter.from_settings(settings, SkewedClock(60.0), redis_url=redis_url)
    b = RateLimiter.from_settings(settings, SkewedClock(-60.0), redis_url=redis_url)
    assert a.try_acquire("p") == 0
    assert b.try_acquire("p") > 9.0
