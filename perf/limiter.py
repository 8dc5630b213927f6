"""Rate-limiter overhead: acquires per second on the memory and Redis backends (JSON line)."""

from __future__ import annotations

import json
import time
import uuid

from quantivista.acquisition.limits import MemoryBackend, RateLimiter, RedisBackend
from quantivista.clock import SystemClock
from quantivista.config import Settings

N = 20_000
RATES = ["1000000/second", "10000000/day"]  # never binding: measures bookkeeping only


def _rate(limiter: RateLimiter, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        limiter.acquire("p")
    return n / (time.perf_counter() - t0)


def main() -> None:
    clock = SystemClock()
    out: dict[str, object] = {"bench": "limiter", "windows": len(RATES)}
    mem = RateLimiter({"p": RATES}, clock=clock, backend=MemoryBackend())
    out["memory_acquires_per_s"] = round(_rate(mem, N))
    try:
        prefix = f"qv-perf:{uuid.uuid4().hex[:8]}"
        backend = RedisBackend(Settings().services.redis_url, prefix=prefix)
        red = RateLimiter({"p": RATES}, clock=clock, backend=backend)
        out["redis_acquires_per_s"] = round(_rate(red, N // 10))
        red.reset()
    except Exception as exc:  # no Redis here: report instead of failing
        out["redis_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
