"""One set of resilience parts per process, shared by every router it builds."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Literal

from quantivista.acquisition.analytics import ProviderAnalytics
from quantivista.acquisition.breaker import Breakers
from quantivista.acquisition.cache import ResponseCache
from quantivista.acquisition.health import HealthMonitor
from quantivista.acquisition.limits import RateLimiter
from quantivista.acquisition.retry import RetryPolicy
from quantivista.acquisition.router import Router
from quantivista.acquisition.shared import (
    RedisBreakerState,
    RedisHealthStore,
    RedisResultCache,
    redis_client,
    state_prefix,
)
from quantivista.clock import Clock
from quantivista.config import Settings
from quantivista.providers.base import Provider
from quantivista.providers.registry import ProviderRegistry

__all__ = ["Acquisition"]


class Acquisition:
    """Providers (built once each), rate limits, breakers, health, cache and analytics."""

    def __init__(self, settings: Settings, clock: Clock, registry: ProviderRegistry) -> None:
        res = settings.resilience
        self.settings = settings
        self.clock = clock
        self.registry = registry
        self.limiter = RateLimiter.from_settings(res, clock, redis_url=settings.services.redis_url)
        # with the redis backend, breakers, health and cached answers are shared too
        self._redis = redis_client(settings.services.redis_url) if res.backend == "redis" else None
        prefix = state_prefix(res.redis_prefix)
        shared = self._redis is not None
        self.breakers = Breakers.from_settings(
            res.breaker, clock, RedisBreakerState(self._redis, prefix) if shared else None
        )
        self.analytics = ProviderAnalytics(limiter=self.limiter, breakers=self.breakers)
        self.health = HealthMonitor(store=RedisHealthStore(self._redis, prefix) if shared else None)
        l2 = RedisResultCache(self._redis, prefix) if shared else None
        self.cache = ResponseCache.from_settings(res.cache, l2) if res.cache.enabled else None
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def provider(self, name: str) -> Provider:
        """Return the provider registered as `name`, built on first use.

        A provider that passes its own requests through a gate gets the rate limiter.
        """
        key = name.lower()
        with self._lock:
            if key not in self._providers:
                provider = self.registry.create(key, self.settings, self.clock)
                if provider.gates_requests and provider.gate is None:
                    provider.gate = self.limiter
                self._providers[key] = provider
            return self._providers[key]

    def router(
        self, names: Sequence[str], *, ordering: Literal["auto", "given"] | None = None
    ) -> Router:
        """Return a router over the named providers, sharing this set's parts."""
        return Router(
            [self.provider(n) for n in names],
            limiter=self.limiter,
            breakers=self.breakers,
            retry=RetryPolicy.from_settings(self.settings.resilience.retry),
            cache=self.cache,
            analytics=self.analytics,
            health=self.health,
            clock=self.clock,
            ordering=ordering or self.settings.resilience.ordering,
        )

    def close(self) -> None:
        """Close every provider built and the limiter's connections."""
        with self._lock:
            providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            provider.close()
        self.limiter.close()
        if self._redis is not None:
            self._redis.close()
