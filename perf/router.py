"""Router overhead per fetch: bare router vs limiter + breaker (+ call timeout) + cache miss."""

from __future__ import annotations

import json
import time

from quantivista.acquisition.breaker import Breakers
from quantivista.acquisition.cache import ResponseCache
from quantivista.acquisition.limits import RateLimiter
from quantivista.acquisition.router import Router
from quantivista.clock import SystemClock
from quantivista.providers.base import BarRequest, FetchResult
from quantivista.testing.fake_providers import FakeProvider


class Constant(FakeProvider):
    """Answers every request with one prebuilt result: the cost measured is the router's."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._result = super().fetch_bars(BarRequest.of("S", "2020-01-02", "2020-01-03"))

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        return FetchResult(bars=self._result.bars, actions=self._result.actions, provider=self.name)


N = 5_000


def _per_call_us(router: Router, n: int, *, same: bool = False) -> float:
    requests = [
        BarRequest.of("S" if same else f"S{i}", "2020-01-02", "2020-01-31") for i in range(n)
    ]
    t0 = time.perf_counter()
    for r in requests:
        router.fetch(r)
    return 1e6 * (time.perf_counter() - t0) / n


def main() -> None:
    clock = SystemClock()
    bare = Router([Constant("p")], clock=clock, single_flight=False)
    limiter = RateLimiter({"p": ["1000000/second", "100000000/day"]}, clock=clock)
    full = Router(
        [Constant("p")],
        limiter=limiter,
        breakers=Breakers(clock, call_timeout_s=None),
        cache=ResponseCache(max_entries=N),
        clock=clock,
    )
    timed = Router([Constant("p")], breakers=Breakers(clock, call_timeout_s=10), clock=clock)
    out = {
        "bench": "router",
        "calls": N,
        "bare_us": round(_per_call_us(bare, N), 1),
        "limiter_breaker_cache_miss_us": round(_per_call_us(full, N), 1),
        "cache_hit_us": round(_per_call_us(full, N, same=True), 1),
        "breaker_with_timeout_thread_us": round(_per_call_us(timed, N // 5), 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
