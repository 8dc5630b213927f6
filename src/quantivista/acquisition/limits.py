"""Rate limits per provider: several windows at once, callers queue instead of failing.

A `RateLimiter` holds, per provider, a list of `Rate`s ("5/minute", "25/day", "1/second").
`acquire(provider)` blocks (sleeping through the injected `Clock`) until every window has
room, and raises `QuotaExhaustedError` only when the wait would exceed `max_wait_s` (a spent
daily quota). Windows are sliding logs: at no instant does any window of length `period`
hold more than `limit` calls, which is the strictest reading of a vendor's limit (a token
bucket or GCRA would let up to twice the limit through across a window edge).

State lives in a backend: `MemoryBackend` (one process, thread-safe) or `RedisBackend` (one
atomic Lua script, so several worker processes share one quota).

A vendor counts a call when it arrives, some time after our grant: on a loaded machine a
granted call can wait in a thread or a socket longer than any fixed margin, and arrive just
behind calls granted after it. `call()` therefore holds its entry in the window while the
call is in flight (scored `hold_s` ahead) and, once the answer is back, stamps it with the
time the answer came. Arrival lies between grant and answer, so the next call granted a
window after that stamp arrives a full window after it, whatever the delays.
"""

from __future__ import annotations

import bisect
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import polars as pl

from quantivista.errors import ConfigurationError, InvalidInputError, QuotaExhaustedError
from quantivista.model.rates import Rate

if TYPE_CHECKING:
    from quantivista.clock import Clock
    from quantivista.config import ResilienceSettings

__all__ = [
    "LimiterBackend",
    "MemoryBackend",
    "Rate",
    "RateLimiter",
    "RedisBackend",
    "WindowUsage",
]


class WindowUsage(NamedTuple):
    """How much of one window is used right now (a tuple: made per API request)."""

    provider: str
    rate: Rate
    used: int
    left: int
    resets_in_s: float  # until the oldest call in the window leaves it (0 when empty)


class LimiterBackend(Protocol):
    """Where the sliding logs live. `now` is seconds on the backend's time line."""

    shared: bool  # True: state is shared across processes, so `now` must be wall-clock time

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
        """Record `cost` calls if every window has room and return 0, else the wait in s.

        With `hold_s`, the calls are in flight: scored at `now + hold_s` until `settle`.
        """
        ...

    def settle(self, provider: str, rates: Sequence[Rate], token: str, now: float) -> None:
        """Stamp the in-flight calls recorded under `token` with `now` (their answer came)."""
        ...

    def usage(self, provider: str, rates: Sequence[Rate], now: float) -> list[tuple[int, float]]:
        """Return (used, seconds until the oldest entry expires) per rate."""
        ...

    def take(
        self, provider: str, rates: Sequence[Rate], now: float, cost: int
    ) -> tuple[float, list[tuple[int, float]]]:
        """`try_acquire` and then `usage`, in one step (one lock, one round trip)."""
        ...

    def reset(self, provider: str | None = None) -> None:
        """Forget recorded calls (of one provider, or all)."""
        ...


def _wait_for(scores: Sequence[float], rate: Rate, now: float, cost: int) -> float:
    """Seconds until `cost` more calls fit in the window (scores sorted, already pruned).

    The score at index excess-1 must leave the window first. A score after `now` is a call
    still in flight: it leaves when its answer comes, so look again shortly.
    """
    excess = len(scores) + cost - rate.limit
    if excess <= 0:
        return 0.0
    blocking = scores[excess - 1]
    if blocking > now:
        return _IN_FLIGHT_POLL_S
    # float rounding can make the difference 0 while the call is still inside, hence the floor
    return max(blocking + rate.period_s - now, _MIN_WAIT_S)


_MIN_WAIT_S = 1e-6
_IN_FLIGHT_POLL_S = 0.01


class MemoryBackend:
    """Sliding logs in this process; a lock makes check-and-record atomic across threads.

    With a clock (`bind_clock`; a `RateLimiter` binds its own) the time is read inside the
    lock and the `now` passed in is ignored: a caller's reading taken before it waited for the
    lock is stale, and a call stamped earlier than it was granted leaves its window early.
    """

    shared = False

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        # per window, sorted (score, token) pairs; a token names one call's entries
        self._logs: dict[tuple[str, Rate], list[tuple[float, str]]] = {}
        # provider -> (the windows `take` last saw, their logs): `take` runs per API request
        self._held: dict[str, tuple[Sequence[Rate], list[list[tuple[float, str]]]]] = {}
        self._lock = threading.Lock()

    def bind_clock(self, clock: Callable[[], float]) -> None:
        """Read the time from `clock` inside the lock from now on (one clock per backend)."""
        if self._clock is not None and self._clock != clock:
            raise ConfigurationError("an in-memory limiter backend reads one clock")
        self._clock = clock

    def _at(self, now: float) -> float:
        # called with the lock held
        return now if self._clock is None else self._clock()

    def _log(self, provider: str, rate: Rate, now: float) -> list[tuple[float, str]]:
        log = self._logs.setdefault((provider, rate), [])
        horizon = now - rate.period_s
        cut = 0
        while cut < len(log) and log[cut][0] <= horizon:
            cut += 1
        del log[:cut]
        return log

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
        with self._lock:
            now = self._at(now)
            logs = [self._log(provider, r, now) for r in rates]
            wait = max(
                (
                    _wait_for([e[0] for e in log], r, now, cost)
                    for log, r in zip(logs, rates, strict=True)
                ),
                default=0.0,
            )
            if wait > 0:
                return wait
            for log in logs:
                for _ in range(cost):
                    bisect.insort(log, (now + hold_s, token))
            return 0.0

    def settle(self, provider: str, rates: Sequence[Rate], token: str, now: float) -> None:
        with self._lock:
            now = self._at(now)
            for rate in rates:
                log = self._logs.get((provider, rate))
                if not log:
                    continue
                mine = sum(1 for e in log if e[1] == token)
                log[:] = [e for e in log if e[1] != token]
                for _ in range(mine):
                    bisect.insort(log, (now, token))

    def usage(self, provider: str, rates: Sequence[Rate], now: float) -> list[tuple[int, float]]:
        with self._lock:
            now = self._at(now)
            out = []
            for rate in rates:
                log = self._log(provider, rate, now)
                out.append((len(log), max(log[0][0] + rate.period_s - now, 0.0) if log else 0.0))
            return out

    def take(
        self, provider: str, rates: Sequence[Rate], now: float, cost: int
    ) -> tuple[float, list[tuple[int, float]]]:
        # `try_acquire` and `usage` in one pass without copying the logs: an API client's
        # windows can hold thousands of entries, and this runs per request
        with self._lock:
            now = self._at(now)
            held = self._held.get(provider)
            if held is None or held[0] is not rates:
                held = self._held[provider] = (rates, [self._log(provider, r, now) for r in rates])
            logs = held[1]
            wait = 0.0
            for rate, log in zip(rates, logs, strict=True):
                horizon = now - rate.period_s
                cut = 0
                while cut < len(log) and log[cut][0] <= horizon:
                    cut += 1
                if cut:
                    del log[:cut]
                excess = len(log) + cost - rate.limit
                if excess > 0:
                    blocking = log[excess - 1][0]
                    if blocking > now:
                        wait = max(wait, _IN_FLIGHT_POLL_S)
                    else:
                        wait = max(wait, blocking + rate.period_s - now, _MIN_WAIT_S)
            if wait == 0.0:
                for log in logs:
                    for _ in range(cost):  # at the end unless calls are in flight
                        bisect.insort(log, (now, ""))
            return wait, [
                (len(log), max(log[0][0] + rate.period_s - now, 0.0) if log else 0.0)
                for rate, log in zip(rates, logs, strict=True)
            ]

    def reset(self, provider: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._logs if provider is None or k[0] == provider]:
                del self._logs[key]
            for name in [p for p in self._held if provider is None or p == provider]:
                del self._held[name]


# The clock of the scripts (issue 17: hosts' clocks differ by seconds unless NTP keeps them
# close, and a window compares entries stamped by different hosts). ARGV[1] is the caller's
# time; when the argument after the windows' pairs (FLAG) is '1', `now` is Redis's own TIME,
# one clock for every host, and `shift` turns the scores the script returns back into the
# caller's time, so resets computed against the caller's clock stay right.
_CLOCK_LUA = """
local now = tonumber(ARGV[1])
local shift = 0
if ARGV[FLAG] == '1' then
  local t = redis.call('TIME')
  local server = tonumber(t[1]) + tonumber(t[2]) / 1000000
  shift = now - server
  now = server
end
"""

# KEYS: one sorted set per window. ARGV: now, cost, token, hold, poll, least, the name of
# entries to give back, the first and last index of those, then (limit, period) pairs.
# Gives back (removes) the named entries `give:first..give:last`, then records as many of
# `cost` calls as every window has room for, scored now + hold, when that is at least
# `least` (`cost` for a call; 1 for a lease of up to `cost` tokens). Returns the wait in
# seconds for `least` calls ("0" when recorded), the calls recorded, then per window the
# calls in it and the score of its oldest ("" when empty), all as strings (Lua numbers
# become ints). An entry scored after `now` is in flight: wait `poll`, it may settle soon
# (a negative `poll`: it never settles early, wait until it leaves the window).
_ACQUIRE_LUA = (
    _CLOCK_LUA.replace("FLAG", "10 + 2 * #KEYS")
    + """
local cost = tonumber(ARGV[2])
local hold = tonumber(ARGV[4])
local poll = tonumber(ARGV[5])
local least = tonumber(ARGV[6])
local first, last = tonumber(ARGV[8]), tonumber(ARGV[9])
local room = cost
for i, key in ipairs(KEYS) do
  for j = first, last do
    redis.call('ZREM', key, ARGV[7] .. ':' .. j)
  end
  local limit = tonumber(ARGV[8 + 2 * i])
  local period = tonumber(ARGV[9 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
  local free = limit - redis.call('ZCARD', key)
  if free < room then room = free end
end
local wait = 0
if room < least then
  room = 0
  for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[8 + 2 * i])
    local period = tonumber(ARGV[9 + 2 * i])
    local excess = redis.call('ZCARD', key) + least - limit
    if excess > 0 then
      local entry = redis.call('ZRANGE', key, excess - 1, excess - 1, 'WITHSCORES')
      local score = tonumber(entry[2])
      local w = poll
      if score <= now or poll < 0 then w = math.max(score + period - now, 0.000001) end
      if w > wait then wait = w end
    end
  end
else
  for i, key in ipairs(KEYS) do
    local period = tonumber(ARGV[9 + 2 * i])
    for j = 1, room do
      redis.call('ZADD', key, now + hold, ARGV[3] .. ':' .. j)
    end
    redis.call('PEXPIRE', key, math.ceil((period + hold) * 1000) + 1000)
  end
end
local out = {tostring(wait), tostring(room)}
for i, key in ipairs(KEYS) do
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  out[#out + 1] = tostring(redis.call('ZCARD', key))
  local first = oldest[2] or ''
  if first ~= '' and shift ~= 0 then first = string.format('%.6f', tonumber(first) + shift) end
  out[#out + 1] = first
end
return out
"""
)

# KEYS: the windows. ARGV: now, cost, token. Restamps the token's entries that still exist.
_SETTLE_LUA = (
    _CLOCK_LUA.replace("FLAG", "4")
    + """
for _, key in ipairs(KEYS) do
  for j = 1, tonumber(ARGV[2]) do
    redis.call('ZADD', key, 'XX', now, ARGV[3] .. ':' .. j)
  end
end
return 0
"""
)


class RedisBackend:
    """Sliding logs in Redis sorted sets, checked and recorded by one Lua script (atomic).

    Time comes from the callers' clocks (wall time), so workers need synchronized clocks
    (NTP); a skew of a few milliseconds only shifts a window edge by as much. With
    `server_clock` (what `RateLimiter.from_settings` builds) the scripts take Redis's own
    TIME instead: one clock for all hosts, whatever their skew (the caller's clock then only
    serves to report resets in its own time).
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "qv:ratelimit",
        client: Any = None,
        server_clock: bool = False,
    ) -> None:
        if client is None:
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ConfigurationError(
                    "the redis rate-limit backend needs the redis client: "
                    "pip install 'quantivista[redis]'"
                ) from exc
            client = redis.Redis.from_url(url)
        self.redis = client  # the client (for callers that pipeline their own commands)
        self.prefix = prefix
        self._script = client.register_script(_ACQUIRE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._costs: dict[str, int] = {}  # token -> cost, until settled
        self._clock_flag = ["1"] if server_clock else []  # read by the scripts' _CLOCK_LUA

    def key(self, provider: str, rate: Rate) -> str:
        """Return the Redis key of one window of `provider` (a sorted set of its calls)."""
        return f"{self.prefix}:{provider}:{rate.limit}/{rate.period_s:g}"

    def _run(
        self,
        provider: str,
        rates: Sequence[Rate],
        now: float,
        cost: int,
        *,
        token: str,
        hold_s: float,
        poll_s: float,
        least: int,
        give_back: tuple[str, int, int] = ("-", 1, 0),
    ) -> tuple[float, int, list[tuple[int, str]]]:
        """Run the script: (wait, calls recorded, per window its count and oldest score)."""
        args: list[Any] = [repr(now), cost, token, repr(hold_s), repr(poll_s), least, *give_back]
        for rate in rates:
            args += [rate.limit, repr(rate.period_s)]
        args += self._clock_flag
        wait, taken, *seen = self._script(keys=[self.key(provider, r) for r in rates], args=args)
        pairs = zip(seen[::2], seen[1::2], strict=True)
        return float(wait), int(taken), [(int(c), o.decode() if isinstance(o, bytes) else str(o))
                                         for c, o in pairs]  # fmt: skip

    def lease(
        self,
        provider: str,
        rates: Sequence[Rate],
        now: float,
        wanted: int,
        *,
        token: str,
        ttl_s: float,
        give_back: tuple[str, int, int] | None = None,
    ) -> tuple[int, float, list[tuple[int, float]]]:
        """Take up to `wanted` calls at once (as many as every window has room for), scored
        `now + ttl_s`: a block the caller spends until then. One script call.

        `give_back` (token, first, last) first removes that earlier lease's unspent entries
        `token:first..token:last`. Entries are named `token:1..token:taken`. Return the calls
        taken (0: none), the wait for one call when none, and per window the calls in it
        and the score of its oldest entry (caller's time; 0.0 when empty).
        """
        wait, taken, seen = self._run(
            provider, rates, now, wanted, token=token, hold_s=ttl_s, poll_s=-1.0, least=1,
            give_back=give_back or ("-", 1, 0),
        )  # fmt: skip
        return taken, wait, [(count, float(oldest) if oldest else 0.0) for count, oldest in seen]

    def give_back(self, provider: str, rates: Sequence[Rate], token: str, first: int,
                  last: int) -> None:  # fmt: skip
        """Remove a lease's unspent entries `token:first..token:last` from every window."""
        if first > last:
            return
        names = [f"{token}:{j}" for j in range(first, last + 1)]
        pipe = self.redis.pipeline()
        for rate in rates:
            pipe.zrem(self.key(provider, rate), *names)
        pipe.execute()

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
        if not rates:
            return 0.0
        wait, _, _ = self._run(
            provider, rates, now, cost, token=token or uuid.uuid4().hex, hold_s=hold_s,
            poll_s=_IN_FLIGHT_POLL_S, least=cost,
        )  # fmt: skip
        if wait <= 0 and token:
            self._costs[token] = cost
        return wait

    def take(
        self, provider: str, rates: Sequence[Rate], now: float, cost: int
    ) -> tuple[float, list[tuple[int, float]]]:
        if not rates:
            return 0.0, []
        wait, _, seen = self._run(
            provider, rates, now, cost, token=uuid.uuid4().hex, hold_s=0.0,
            poll_s=_IN_FLIGHT_POLL_S, least=cost,
        )  # fmt: skip
        usage = []
        for rate, (count, oldest) in zip(rates, seen, strict=True):
            resets = float(oldest) + rate.period_s - now if oldest else 0.0
            usage.append((count, max(resets, 0.0)))
        return wait, usage

    def settle(self, provider: str, rates: Sequence[Rate], token: str, now: float) -> None:
        cost = self._costs.pop(token, 0)
        if rates and cost:
            self._settle(
                keys=[self.key(provider, r) for r in rates],
                args=[repr(now), cost, token, *self._clock_flag],
            )

    def usage(self, provider: str, rates: Sequence[Rate], now: float) -> list[tuple[int, float]]:
        if self._clock_flag:  # the windows' clock is Redis's: count against it
            seconds, micros = self.redis.time()
            now = seconds + micros / 1e6
        out = []
        for rate in rates:
            key = self.key(provider, rate)
            pipe = self.redis.pipeline()
            pipe.zcount(key, f"({now - rate.period_s!r}", "+inf")
            pipe.zrangebyscore(key, f"({now - rate.period_s!r}", "+inf", 0, 1, withscores=True)
            count, oldest = pipe.execute()
            resets = oldest[0][1] + rate.period_s - now if oldest else 0.0
            out.append((int(count), max(float(resets), 0.0)))
        return out

    def close(self) -> None:
        """Release the connection pool."""
        self.redis.close()

    def reset(self, provider: str | None = None) -> None:
        pattern = f"{self.prefix}:{provider or '*'}:*"
        keys = list(self.redis.scan_iter(match=pattern))
        if keys:
            self.redis.delete(*keys)


def _check_cost(provider: str, rates: Sequence[Rate], cost: int) -> None:
    if cost < 1:
        raise InvalidInputError("cost must be at least 1", cost=cost)
    too_big = [str(r) for r in rates if cost > r.limit]
    if too_big:
        raise InvalidInputError(
            "a call costs more than a whole window allows", provider=provider, rates=too_big
        )


class RateLimiter:
    """Per-provider multi-window rate limiting; `acquire` is the `CallGate` contract.

    **Usage:**

        limiter = RateLimiter({"alpha_vantage": ["5/minute", "25/day"]}, clock=SystemClock())
        limiter.acquire("alpha_vantage")   # sleeps until a call is allowed
    """

    def __init__(
        self,
        limits: Mapping[str, Iterable[str | Rate]],
        *,
        clock: Clock,
        backend: LimiterBackend | None = None,
        max_wait_s: float = 120.0,
        margin_s: float = 0.0,
    ) -> None:
        self.clock = clock
        self.backend: LimiterBackend = backend or MemoryBackend()
        if isinstance(self.backend, MemoryBackend):
            self.backend.bind_clock(clock.monotonic)  # the time of a grant is read in its lock
        self.max_wait_s = max_wait_s
        self.margin_s = margin_s
        self._rates: dict[str, tuple[Rate, ...]] = {}
        self._windows: dict[str, tuple[Rate, ...]] = {}
        for provider, rates in limits.items():
            self.set_limits(provider, rates)

    @classmethod
    def from_settings(
        cls, settings: ResilienceSettings, clock: Clock, *, redis_url: str | None = None
    ) -> RateLimiter:
        """Build the limiter (and its backend) from `settings.resilience`."""
        backend: LimiterBackend
        if settings.backend == "redis":
            if not redis_url:
                raise ConfigurationError("the redis rate-limit backend needs a redis URL")
            backend = RedisBackend(redis_url, prefix=settings.redis_prefix, server_clock=True)
        else:
            backend = MemoryBackend()
        return cls(
            settings.limits,
            clock=clock,
            backend=backend,
            max_wait_s=settings.max_wait_s,
            margin_s=settings.margin_s,
        )

    def set_limits(self, provider: str, rates: Iterable[str | Rate]) -> None:
        """Replace the windows of `provider` (an empty list means unlimited)."""
        parsed = [r if isinstance(r, Rate) else Rate.parse(r) for r in rates]
        ordered = tuple(sorted(parsed, key=lambda r: r.period_s))
        self._rates[provider.lower()] = ordered
        # the windows enforced are a little longer than the vendor's: a granted call reaches
        # the vendor a moment later, and that moment varies (threads, connection set-up)
        self._windows[provider.lower()] = tuple(
            Rate(r.limit, r.period_s + self.margin_s) for r in ordered
        )

    def rates(self, provider: str) -> tuple[Rate, ...]:
        """Return the windows of `provider` (empty: unlimited)."""
        return self._rates.get(provider.lower(), ())

    @property
    def providers(self) -> list[str]:
        """Return the providers that have limits, sorted."""
        return sorted(p for p, r in self._rates.items() if r)

    def _now(self) -> float:
        # a shared backend compares times across processes: only wall time works there
        return self.clock.now().timestamp() if self.backend.shared else self.clock.monotonic()

    def try_acquire(
        self, provider: str, cost: int = 1, *, token: str = "", hold_s: float = 0.0
    ) -> float:
        """Take `cost` calls now if allowed and return 0; else return the wait in seconds.

        With `token` and `hold_s` the calls stay in flight until `settle(provider, token)`.
        """
        rates = self._windows.get(provider.lower(), ())
        if not rates:
            return 0.0
        _check_cost(provider, rates, cost)
        return self.backend.try_acquire(
            provider.lower(), rates, self._now(), cost, token=token, hold_s=hold_s
        )

    @contextmanager
    def call(self, provider: str, cost: int = 1, *, hold_s: float = 60.0) -> Iterator[None]:
        """Wait for room, then hold the calls in the windows until the block ends.

        `hold_s` bounds how long the call may take (the client's timeout): entries of a
        process that dies mid-call leave the window that long after the grant.
        """
        token = uuid.uuid4().hex
        self.acquire(provider, cost, token=token, hold_s=hold_s)
        try:
            yield
        finally:
            self.settle(provider, token)

    def settle(self, provider: str, token: str) -> None:
        """Stamp the in-flight calls of `token` with now: their answer is back."""
        rates = self._windows.get(provider.lower(), ())
        if rates:
            self.backend.settle(provider.lower(), rates, token, self._now())

    def take(self, provider: str, cost: int = 1) -> tuple[float, WindowUsage | None]:
        """`try_acquire`, and the usage of the tightest window after it (fewest calls left;
        None without limits), in one backend call.

        What a server answering with X-RateLimit-* headers needs per request: one lock
        (memory) or one Lua call (Redis) instead of one for each step.
        """
        name = provider.lower()
        rates = self._windows.get(name, ())
        if not rates:
            return 0.0, None
        if cost != 1:  # one call always fits (every limit is at least 1)
            _check_cost(provider, rates, cost)
        wait, seen = self.backend.take(name, rates, self._now(), cost)
        tightest = None
        for rate, (used, resets) in zip(self._rates[name], seen, strict=True):
            left = max(rate.limit - used, 0)
            if tightest is None or left < tightest.left:
                tightest = WindowUsage(name, rate, used, left, resets)
        return wait, tightest

    def acquire(
        self, provider: str, cost: int = 1, *, token: str = "", hold_s: float = 0.0
    ) -> None:
        """Block until `cost` calls to `provider` are allowed, then record them.

        Raises `QuotaExhaustedError` (with `retry_after_s`) without waiting when the next
        free slot is further away than `max_wait_s`, e.g. a spent daily quota.
        """
        waited = 0.0
        while True:
            wait = self.try_acquire(provider, cost, token=token, hold_s=hold_s)
            if wait <= 0:
                return
            if waited + wait > self.max_wait_s:
                raise QuotaExhaustedError(
                    "rate-limit quota used up; the next call is allowed later than max_wait_s",
                    provider=provider,
                    retry_after_s=round(wait, 3),
                    max_wait_s=self.max_wait_s,
                )
            # round up to whole microseconds: clocks built on datetime cannot sleep less
            step = max(math.ceil(wait * 1e6) / 1e6, 1e-6)
            self.clock.sleep(step)
            waited += step

    def usage(self, provider: str | None = None) -> list[WindowUsage]:
        """Return used and left calls per window (of one provider, or all with limits)."""
        names = [provider.lower()] if provider else self.providers
        out: list[WindowUsage] = []
        now = self._now()
        for name in names:
            rates = self.rates(name)
            windows = self._windows.get(name, ())
            for rate, (used, resets) in zip(
                rates, self.backend.usage(name, windows, now), strict=True
            ):
                out.append(WindowUsage(name, rate, used, max(rate.limit - used, 0), resets))
        return out

    def usage_frame(self) -> pl.DataFrame:
        """Return `usage()` as a frame: provider, window, limit, used, left, resets_in_s."""
        rows = self.usage()
        return pl.DataFrame(
            {
                "provider": [u.provider for u in rows],
                "window": [str(u.rate) for u in rows],
                "limit": [u.rate.limit for u in rows],
                "used": [u.used for u in rows],
                "left": [u.left for u in rows],
                "resets_in_s": [u.resets_in_s for u in rows],
            },
            schema={
                "provider": pl.String,
                "window": pl.String,
                "limit": pl.Int64,
                "used": pl.Int64,
                "left": pl.Int64,
                "resets_in_s": pl.Float64,
            },
        )

    def reset(self, provider: str | None = None) -> None:
        """Forget recorded calls (of one provider, or all)."""
        self.backend.reset(provider.lower() if provider else None)

    def close(self) -> None:
        """Release the backend's connections (the memory backend has none)."""
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
