"""Per-client API rate limits shared through Redis, with tokens leased in small blocks.

A Redis-backed limit costs one blocking round trip per request when every request asks
Redis. A busy client's API process instead leases a block of tokens in one Lua call and
spends them locally; the block grows while the client keeps spending its leases (up to
`max_block`, a tenth of the tightest limit) and shrinks when it does not.

Exactness (documented in the README's API section):
- The shared limit is never exceeded: leased tokens are entries in the same Redis sorted
  sets as single calls (`RedisBackend`'s keys), scored at the lease's end (`now + ttl`), and
  a lease is spent only until then. Every request served lies inside a window that counts
  its entry, whatever process served it.
- Unspent tokens of an ended lease are given back (removed) by the next lease call of the
  same client in that process; a client that goes quiet leaves them counted until they
  leave the window (at most `max_block` per API process).
- `X-RateLimit-Remaining` is the limit minus the calls Redis counted at the last lease
  plus this lease's unspent tokens (other processes' spending since then is not seen);
  `Retry-After` on a 429 is the exact wait for one token (an entry scored `ttl` ahead
  leaves the window up to `ttl` later than a single call would).
- A refused client is refused by this process without asking Redis for up to `ttl`
  (tokens another process gives back meanwhile are seen after that).
- A client whose tightest limit is under 10 calls gets blocks of one: every request is a
  Redis call and the counts are exact.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quantivista.acquisition.limits import RedisBackend, WindowUsage
from quantivista.clock import Clock
from quantivista.model.rates import Rate

__all__ = ["LeasedLimiter"]

# KEYS: one sorted set per window (RedisBackend's keys). ARGV: now, wanted, lease name,
# ttl, the previous lease's name, its first unspent index, its size, then (limit, period)
# pairs. Gives back the previous lease's unspent entries, then takes as many of `wanted`
# tokens as every window has room for (at least one), scored now + ttl. Returns the tokens
# taken ("0": none), the wait for one token when none, then per window its count and the
# score of its oldest entry ("" when empty).
_LEASE_LUA = """
local now = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local ttl = tonumber(ARGV[4])
local first_unspent = tonumber(ARGV[6])
local old_size = tonumber(ARGV[7])
local room = wanted
for i, key in ipairs(KEYS) do
  for j = first_unspent, old_size do
    redis.call('ZREM', key, ARGV[5] .. ':' .. j)
  end
  local limit = tonumber(ARGV[6 + 2 * i])
  local period = tonumber(ARGV[7 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local free = limit - redis.call('ZCARD', key)
  if free < room then room = free end
end
local wait = 0
if room < 1 then
  room = 0
  for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[6 + 2 * i])
    local period = tonumber(ARGV[7 + 2 * i])
    local excess = redis.call('ZCARD', key) + 1 - limit
    if excess > 0 then
      local entry = redis.call('ZRANGE', key, excess - 1, excess - 1, 'WITHSCORES')
      local w = math.max(tonumber(entry[2]) + period - now, 0.000001)
      if w > wait then wait = w end
    end
  end
else
  for i, key in ipairs(KEYS) do
    local period = tonumber(ARGV[7 + 2 * i])
    for j = 1, room do
      redis.call('ZADD', key, now + ttl, ARGV[3] .. ':' .. j)
    end
    redis.call('PEXPIRE', key, math.ceil((period + ttl) * 1000) + 1000)
  end
end
local out = {tostring(room), tostring(wait)}
for i, key in ipairs(KEYS) do
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  out[#out + 1] = tostring(redis.call('ZCARD', key))
  out[#out + 1] = oldest[2] or ''
end
return out
"""


@dataclass
class _Lease:
    """One client's current block of tokens in this process."""

    rates: tuple[Rate, ...]
    name: str = ""
    size: int = 0  # tokens taken
    spent: int = 0
    ends: float = 0.0  # spend only before this (backend time)
    block: int = 1  # the size the next lease asks for
    seen: list[tuple[int, float]] = field(default_factory=list)  # per window: count, oldest
    at: float = 0.0  # when `seen` was read
    refused_until: float = 0.0  # a refused client is refused here until then, no Redis call
    free_at: float = 0.0  # when the refusal's wait ends
    lock: threading.Lock = field(default_factory=threading.Lock)


class LeasedLimiter:
    """`RateLimiter.take` for API clients over a Redis backend, a block of tokens per call."""

    def __init__(
        self, backend: RedisBackend, clock: Clock, *, ttl_s: float = 0.25, max_block: int = 256
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_block = max_block
        self._leases: dict[str, _Lease] = {}
        self._script = backend._redis.register_script(_LEASE_LUA)

    def set_limits(self, provider: str, rates: Iterable[str | Rate]) -> None:
        """Set the windows of `provider` (a client's limiter key); empty: unlimited."""
        parsed = [r if isinstance(r, Rate) else Rate.parse(r) for r in rates]
        self._leases[provider.lower()] = _Lease(tuple(sorted(parsed, key=lambda r: r.period_s)))

    def take(self, provider: str, cost: int = 1) -> tuple[float, WindowUsage | None]:
        """Spend one token (from the lease, or a new lease); return the wait (0: admitted)
        and the tightest window's usage, as `RateLimiter.take` does."""
        del cost  # an API request costs one
        name = provider.lower()
        lease = self._leases.get(name)
        if lease is None or not lease.rates:
            return 0.0, None
        now = self.clock.now().timestamp()
        with lease.lock:
            if lease.spent < lease.size and now < lease.ends:
                lease.spent += 1
                return 0.0, self._usage(name, lease, now)
            if now < lease.refused_until:  # a client over its limit costs Redis nothing
                return lease.free_at - now, self._usage(name, lease, now)
            wait = self._renew(name, lease, now)
            if wait > 0:
                # look again after at most a lease's time: another process may give back
                lease.refused_until = now + min(wait, self.ttl_s)
                lease.free_at = now + wait
                return wait, self._usage(name, lease, now)
            lease.spent = 1
            return 0.0, self._usage(name, lease, now)

    def _renew(self, name: str, lease: _Lease, now: float) -> float:
        """Give back the old lease's unspent tokens and take a new block: one Lua call."""
        # the block follows demand: doubled when the last lease was spent before it ended,
        # else the number spent (a client slowing down holds fewer tokens idle)
        tightest = min(r.limit for r in lease.rates)
        cap = max(1, min(self.max_block, tightest // 10))
        if lease.size and lease.spent >= lease.size:
            lease.block = min(cap, lease.block * 2)
        else:
            lease.block = min(cap, max(1, lease.spent))
        new = uuid.uuid4().hex
        args: list[Any] = [repr(now), lease.block, new, repr(self.ttl_s), lease.name or "-",
                           lease.spent + 1, lease.size]  # fmt: skip
        for rate in lease.rates:
            args += [rate.limit, repr(rate.period_s)]
        keys = [self.backend._key(name, r) for r in lease.rates]
        taken, wait, *seen = self._script(keys=keys, args=args)
        lease.name, lease.size, lease.spent = new, int(taken), 0
        lease.ends = now + self.ttl_s
        pairs = zip(seen[::2], seen[1::2], strict=True)
        lease.seen = [(int(c), float(o) if o else 0.0) for c, o in pairs]
        lease.at = now
        return float(wait)

    def _usage(self, name: str, lease: _Lease, now: float) -> WindowUsage:
        unspent = lease.size - lease.spent
        tightest: WindowUsage | None = None
        for rate, (count, oldest) in zip(lease.rates, lease.seen, strict=True):
            used = max(count - unspent, 0)
            resets = max(oldest + rate.period_s - now, 0.0) if count else 0.0
            usage = WindowUsage(name, rate, used, max(rate.limit - used, 0), resets)
            if tightest is None or usage.left < tightest.left:
                tightest = usage
        assert tightest is not None
        return tightest

    def usage(self, provider: str) -> list[tuple[int, float]]:
        """Return the windows' (count, seconds to reset) as Redis holds them now."""
        lease = self._leases.get(provider.lower())
        rates: Sequence[Rate] = lease.rates if lease else ()
        return self.backend.usage(provider.lower(), rates, self.clock.now().timestamp())

    def close(self) -> None:
        """Give back every lease's unspent tokens, then release the connection pool."""
        now = self.clock.now().timestamp()
        for name, lease in self._leases.items():
            with lease.lock:
                if lease.rates and lease.spent < lease.size:
                    self._give_back(name, lease, now)
        self.backend.close()

    def _give_back(self, name: str, lease: _Lease, now: float) -> None:
        pipe = self.backend._redis.pipeline()
        for rate in lease.rates:
            key = self.backend._key(name, rate)
            names = [f"{lease.name}:{j}" for j in range(lease.spent + 1, lease.size + 1)]
            pipe.zrem(key, *names)
        with contextlib.suppress(Exception):  # closing: entries leave their windows anyway
            pipe.execute()
        lease.size = lease.spent
