"""Leased API rate limits over a real Redis: never above the shared limit, fewer round trips."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
import redis

from api.conftest import SYMBOLS, live_api, make_client
from quantivista.acquisition.limits import RedisBackend
from quantivista.api.lease import LeasedLimiter
from quantivista.clock import SystemClock, TestClock
from quantivista.config import Settings

pytestmark = pytest.mark.redis


def _limiters(url: str, n: int) -> tuple[str, list[LeasedLimiter]]:
    prefix = f"qv-test:apiperf:{uuid4().hex[:8]}"
    out = []
    for _ in range(n):
        limiter = LeasedLimiter(RedisBackend(url, prefix=prefix), SystemClock(), ttl_s=5.0)
        limiter.set_limits("api:c1", ["200/minute"])
        out.append(limiter)
    return prefix, out


def _count_calls(limiter: LeasedLimiter) -> list[int]:
    calls = [0]
    lease = limiter.backend.lease

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return lease(*args, **kwargs)

    limiter.backend.lease = counted  # type: ignore[method-assign]
    return calls


def test_two_processes_never_exceed_the_shared_limit_and_lease_blocks(redis_url: str) -> None:
    prefix, (one, two) = _limiters(redis_url, 2)
    calls = _count_calls(one), _count_calls(two)
    admitted = 0
    for i in range(400):
        wait, usage = (one, two)[i % 2].take("api:c1")
        if wait == 0:
            admitted += 1
            assert usage is not None and usage.rate.limit == 200 and 0 <= usage.left < 200
        else:
            assert 0 < wait <= 60 + 5.0  # the exact wait for one token (entries live ttl more)
            assert usage is not None and usage.left == 0
    cap = 200 // 10
    assert 200 - 2 * cap <= admitted <= 200  # leased tokens are counted in Redis
    assert sum(calls[0]) + sum(calls[1]) < 100  # blocks of up to 20, not 400 round trips
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:api:c1:200/60"
    one.close()
    two.close()  # unspent tokens go back
    assert client.zcard(key) == admitted
    client.delete(key)


def test_a_low_limit_is_exact_one_token_per_call(redis_url: str) -> None:
    prefix, (one, two) = _limiters(redis_url, 2)
    for limiter in (one, two):
        limiter.set_limits("api:c1", ["5/minute"])
    replies = [(one, two)[i % 2].take("api:c1") for i in range(7)]
    assert [wait == 0 for wait, _ in replies] == [True] * 5 + [False] * 2
    assert [u.left for _, u in replies[:5] if u is not None] == [4, 3, 2, 1, 0]
    one.close()
    two.close()
    redis.Redis.from_url(redis_url).delete(f"{prefix}:api:c1:5/60")


def test_an_api_process_leasing_from_redis_admits_exactly_its_limit(
    shared_limits: Callable[[list[str]], Settings],
) -> None:
    settings = shared_limits(["100/minute"])
    creds = make_client(settings, "acme", "read:bars")
    params = {"symbols": SYMBOLS[0], "start": "2023-01-01", "end": "2023-03-31"}
    with live_api(settings) as api, api.client(headers={"X-API-Key": creds.api_key}) as http:
        replies = [http.get("/api/v1/bars", params=params) for _ in range(110)]
    codes = [r.status_code for r in replies]
    assert codes == [200] * 100 + [429] * 10  # one process: its leases take what is left
    assert [int(r.headers["x-ratelimit-remaining"]) for r in replies[:100]] == list(
        range(99, -1, -1)
    )
    assert all(int(r.headers["retry-after"]) >= 1 for r in replies[100:])


def test_a_steady_client_takes_its_next_blocks_off_the_calling_thread(redis_url: str) -> None:
    prefix = f"qv-test:apiperf:{uuid4().hex[:8]}"
    limiter = LeasedLimiter(
        RedisBackend(redis_url, prefix=prefix), SystemClock(), ttl_s=5.0, max_block=8
    )
    limiter.set_limits("api:c1", ["1000/minute"])
    callers: list[str] = []
    lease = limiter.backend.lease

    def counted(*args: Any, **kwargs: Any) -> Any:
        callers.append(threading.current_thread().name)
        return lease(*args, **kwargs)

    limiter.backend.lease = counted  # type: ignore[method-assign]
    replies = [limiter.take("api:c1") for _ in range(100)]
    assert all(wait == 0 for wait, _ in replies)
    assert [u.left for _, u in replies if u is not None] == list(range(999, 899, -1))
    here = threading.current_thread().name
    assert callers.count(here) == 1  # the first request's block; the others came ahead
    assert len(callers) >= 100 // 8
    limiter.close()
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(f"{prefix}:api:c1:1000/60") == 100  # blocks taken ahead, given back
    client.delete(f"{prefix}:api:c1:1000/60")


def test_leases_are_scored_on_redis_time_whatever_the_api_clock(redis_url: str) -> None:
    prefix = f"qv-test:apiperf:{uuid4().hex[:8]}"
    skewed = TestClock(datetime.now(UTC) - timedelta(hours=3))  # a host clock hours off
    backend = RedisBackend(redis_url, prefix=prefix, server_clock=True)
    limiter = LeasedLimiter(backend, skewed, ttl_s=1.0)
    limiter.set_limits("api:c1", ["5/minute"])
    wait, usage = limiter.take("api:c1")
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    ((_, score),) = client.zrange(f"{prefix}:api:c1:5/60", 0, -1, withscores=True)
    assert wait == 0 and abs(score - (seconds + micros / 1e6 + 1.0)) < 5  # Redis's clock
    assert usage is not None and usage.left == 4 and 0 < usage.resets_in_s <= 61
    limiter.close()
    client.delete(f"{prefix}:api:c1:5/60")


def test_blocks_that_ended_unspent_are_all_given_back_before_the_next(redis_url: str) -> None:
    prefix = f"qv-test:apiperf:{uuid4().hex[:8]}"
    clock = TestClock(datetime.now(UTC))
    limiter = LeasedLimiter(RedisBackend(redis_url, prefix=prefix), clock, ttl_s=1.0, max_block=8)
    limiter.set_limits("api:c1", ["1000/minute"])
    # blocks of 1, 2 and 4 (each one half spent takes the next ahead): 2 of the 4 unspent,
    # and a block of 8 taken ahead
    assert all(limiter.take("api:c1")[0] == 0 for _ in range(5))
    ahead = limiter._leases["api:c1"].ahead
    assert ahead is not None and ahead.result().size == 8
    clock.advance(2.0)  # both end unspent (a client slower than its leases)
    wait, usage = limiter.take("api:c1")
    # Redis counted, with the new block, only what was spent: the 2 and the 8 went back
    assert wait == 0 and usage is not None and usage.left == 1000 - 6
    limiter.close()
    redis.Redis.from_url(redis_url).delete(f"{prefix}:api:c1:1000/60")
