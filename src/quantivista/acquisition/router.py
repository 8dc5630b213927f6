"""Route a request to providers: choose, rate-limit, break, retry, fail over, cache.

For each request the router

1. answers from the response cache when it can (keyed by the request, not the provider);
2. joins an identical request already in flight instead of making a second call;
3. orders the capable providers: usable before those with an open breaker or a spent
   quota (kept aside until it resets); then, with `ordering="auto"`, free before paid, by
   `capabilities.priority`, by health score, rotating among equals to spread the load
   (the default `ordering="given"` keeps the caller's order: it is the preference);
4. calls each in turn through its rate limit and circuit breaker, retrying retryable errors
   with exponential backoff and jitter (a vendor's Retry-After wins), and moves on to the
   next provider on a permanent error, an open breaker, a spent quota or exhausted retries.

Each part is optional: `Router(providers)` alone behaves like the plain failover router
(given order, one call per provider, bugs that are not `ProviderError`s propagate).
Every call is recorded as an `Attempt`: on success in `result.metadata["attempts"]`, on
failure in `error.context["attempts"]` of the error raised (the last one).
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.acquisition.breaker import (
    Breakers,
    BreakerState,
    CircuitBreaker,
    counts_as_failure,
)
from quantivista.acquisition.cache import ResponseCache, SingleFlight, copy_result, request_key
from quantivista.acquisition.health import HealthMonitor
from quantivista.acquisition.limits import RateLimiter
from quantivista.acquisition.retry import RetryPolicy
from quantivista.clock import Clock, SystemClock
from quantivista.errors import (
    CircuitOpenError,
    NotFoundError,
    ProviderError,
    QuotaExhaustedError,
)
from quantivista.providers.base import BarRequest, FetchResult, Provider

__all__ = ["Attempt", "Router"]

Ordering = Literal["auto", "given"]


@dataclass(slots=True)
class Attempt:
    """One provider call the router made (or skipped) for a request."""

    provider: str
    ok: bool
    error: str | None = None
    kind: str | None = None
    attempt: int = 1
    latency_s: float = field(default=0.0, compare=False)
    waited_s: float = field(default=0.0, compare=False)  # backoff slept before the next try

    def __str__(self) -> str:
        return f"{self.provider}: {self.kind or 'ok'}"


def _gates_itself(provider: Provider) -> bool:
    # HTTP clients call their gate before every request (pages included); others do not
    return provider.gates_requests and provider.gate is not None


class Router:
    """Fetch bars from the best available provider; see the module docstring.

    **Usage:**

        router = Router([primary, backup], limiter=limiter, breakers=breakers)
        result = router.fetch(BarRequest.of("AAPL", "2024-01-02", "2024-01-31"))
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        limiter: RateLimiter | None = None,
        breakers: Breakers | None = None,
        retry: RetryPolicy | None = None,
        cache: ResponseCache | None = None,
        analytics: ProviderAnalytics | None = None,
        health: HealthMonitor | None = None,
        clock: Clock | None = None,
        ordering: Ordering = "given",
        single_flight: bool = True,
        quota_suspend_s: float = 3600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = list(providers)
        self.limiter = limiter
        self.breakers = breakers
        self.retry = retry or RetryPolicy(max_attempts=1)  # bare router: no retries
        self.cache = cache
        self.analytics = analytics
        self.health = health or HealthMonitor()
        self.clock: Clock = clock or (breakers.clock if breakers else SystemClock())
        self.ordering = ordering
        self.quota_suspend_s = quota_suspend_s  # when a spent quota does not say until when
        self._flight = SingleFlight() if single_flight else None
        self._rng = rng or random.Random()
        self._rotation = itertools.count()
        self._rng_lock = threading.Lock()

    # -- choosing --------------------------------------------------------------------------
    def _unusable(self, provider: Provider, now: float) -> bool:
        """Say whether the provider's breaker is open or its quota is known to be spent."""
        if self.health.suspended_for(provider.name, now) > 0:
            return True
        return (
            self.breakers is not None
            and self.breakers.get(provider.name).state is BreakerState.OPEN
        )

    def candidates(self, request: BarRequest) -> list[Provider]:
        """Return the providers able to serve `request`, in the order they will be tried."""
        able = [p for p in self.providers if p.capabilities.supports(request.timeframe)]
        now = self.clock.monotonic()
        if self.ordering == "given":  # stable sort: unusable providers go last
            return sorted(able, key=lambda p: self._unusable(p, now))

        def rank(p: Provider) -> tuple[bool, float, int, float]:
            caps = p.capabilities
            score = round(self.health.score(p.name) * 4) / 4  # close scores count as equal
            return (self._unusable(p, now), caps.cost_per_call, caps.priority, -score)

        ranked = sorted(able, key=rank)
        turn = next(self._rotation)
        out: list[Provider] = []
        for _, group in itertools.groupby(ranked, key=rank):
            peers = list(group)
            shift = turn % len(peers)  # round-robin among equivalent providers
            out += peers[shift:] + peers[:shift]
        return out

    # -- fetching --------------------------------------------------------------------------
    def fetch(self, request: BarRequest) -> FetchResult:
        """Return an answer to `request` from the cache or the first provider that succeeds."""
        if self.cache is not None:
            hit = self.cache.get(request, self.clock.now())
            if hit is not None:
                self._count_request("cached")
                return hit
        if self._flight is None:
            result = self._fetch(request)
            self._count_request("fetched")
            return result
        result, shared = self._flight.do(request_key(request), lambda: self._fetch(request))
        self._count_request("shared" if shared else "fetched")
        return copy_result(result, shared=True) if shared else result

    def _count_request(self, how: str) -> None:
        if self.analytics is not None:
            self.analytics.record_request(how)

    def _fetch(self, request: BarRequest) -> FetchResult:
        candidates = self.candidates(request)
        if not candidates:
            raise NotFoundError(
                "no provider serves this timeframe",
                timeframe=str(request.timeframe),
                providers=[p.name for p in self.providers],
            )
        tried: list[Attempt] = []
        last: ProviderError | None = None
        for provider in candidates:
            result, error = self._try_provider(provider, request, tried)
            if result is not None:
                result.provider = result.provider or provider.name
                result.metadata["attempts"] = tried
                if self.cache is not None and not result.bars.is_empty():
                    # an empty answer may be a vendor's hiccup: do not pin it for days
                    self.cache.put(request, result, self.clock.now())
                return result
            last = error
        assert last is not None
        last.context["attempts"] = [str(a) for a in tried]
        raise last

    def _try_provider(
        self, provider: Provider, request: BarRequest, tried: list[Attempt]
    ) -> tuple[FetchResult | None, ProviderError | None]:
        """Call one provider with retries; return its result or the error that ended it."""
        name = provider.name
        breaker = self.breakers.get(name) if self.breakers is not None else None
        suspended = self.health.suspended_for(name, self.clock.monotonic())
        if suspended > 0:
            error: ProviderError = QuotaExhaustedError(
                "quota spent: provider suspended until it resets",
                provider=name,
                retry_after_s=round(suspended, 3),
            )
            self._skip(tried, name, error, 1)
            return None, error
        for number in itertools.count(1):
            if breaker is not None and breaker.state is BreakerState.OPEN:
                error = CircuitOpenError(
                    "circuit breaker is open", provider=name, retry_in_s=breaker.retry_in_s()
                )
                self._skip(tried, name, error, number)
                return None, error
            start = self.clock.monotonic()
            try:
                if self.limiter is not None and not _gates_itself(provider):
                    self.limiter.acquire(name)
                    start = self.clock.monotonic()  # queueing is not the provider's latency
                result = self._call(provider, request, breaker)
            except (CircuitOpenError, QuotaExhaustedError) as exc:
                # refused on our side (or a spent vendor quota): no retry, next provider
                self._skip(tried, name, exc, number)
                if isinstance(exc, QuotaExhaustedError):
                    # asking again before the reset only burns time (and vendor goodwill)
                    wait = exc.context.get("retry_after_s") or self.quota_suspend_s
                    self.health.suspend(name, self.clock.monotonic() + float(wait))
                return None, exc
            except ProviderError as exc:
                latency = self.clock.monotonic() - start
                attempt = Attempt(name, False, str(exc), type(exc).__name__, number, latency)
                tried.append(attempt)
                self._observe(name, exc, latency)
                with self._rng_lock:
                    wait = self.retry.delay(number, exc, self._rng)
                if wait is None:
                    return None, exc
                attempt.waited_s = wait
                self.clock.sleep(wait)
                continue
            latency = self.clock.monotonic() - start
            tried.append(Attempt(name, True, attempt=number, latency_s=latency))
            self._observe(name, None, latency)
            return result, None
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(
        self, provider: Provider, request: BarRequest, breaker: CircuitBreaker | None
    ) -> FetchResult:
        if breaker is None:
            return provider.fetch_bars(request)
        # a client with its own I/O timeout enforces it per request; others get the breaker's
        timeout = None if provider.timeout_s is not None else breaker.call_timeout_s
        return breaker.call(lambda: provider.fetch_bars(request), timeout_s=timeout)

    def _skip(self, tried: list[Attempt], name: str, error: ProviderError, number: int) -> None:
        tried.append(Attempt(name, False, str(error), type(error).__name__, number))
        if self.analytics is not None:
            self.analytics.record_skip(name, type(error).__name__)

    def _observe(self, name: str, error: ProviderError | None, latency_s: float) -> None:
        healthy = error is None or not counts_as_failure(error)
        self.health.record(name, healthy, latency_s, None if error is None else str(error))
        if self.analytics is not None:
            kind = None if error is None else type(error).__name__
            self.analytics.record_call(name, error is None, latency_s, kind)
