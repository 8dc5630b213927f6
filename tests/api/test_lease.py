"""Leased API rate limits over a real Redis: never above the shared limit, fewer round trips."""

from __future__ import annotations

from uuid import uuid4

import pytest
import redis

from api.conftest import SYMBOLS, live_api, make_client
from quantivista.acquisition.limits import RedisBackend
from quantivista.api.lease import LeasedLimiter
from quantivista.clock import SystemClock
from quantivista.config import ApiSettings, Settings

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
    script = limiter._script

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return script(*args, **kwargs)

    limiter._script = counted  # type: ignore[method-assign]
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
    store: Settings, redis_url: str
) -> None:
    prefix = f"qv-test:apiperf:{uuid4().hex[:8]}"
    settings = store.model_copy(
        update={
            "api": ApiSettings(rate_limits=["100/minute"]),
            "resilience": store.resilience.model_copy(
                update={"backend": "redis", "redis_prefix": prefix}
            ),
            "services": store.services.model_copy(update={"redis_url": redis_url}),
        }
    )
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
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
