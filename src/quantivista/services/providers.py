"""Providers: what is registered, their limits, and how their calls went."""

from __future__ import annotations

from typing import Any

import polars as pl

from quantivista.acquisition.health import ProviderHealth
from quantivista.acquisition.limits import RateLimiter
from quantivista.acquisition.shared import (
    RedisBreakerState,
    RedisHealthStore,
    redis_client,
    state_prefix,
)
from quantivista.acquisition.wiring import Acquisition
from quantivista.clock import SystemClock
from quantivista.config import Settings
from quantivista.model.timeframe import Timeframe
from quantivista.providers.base import PriceBasis
from quantivista.providers.registry import ProviderRegistry, default_registry
from quantivista.storage.contracts import JobCatalog

__all__ = [
    "PROVIDER_STATS_KEY",
    "ProviderService",
    "capability_table",
    "default_registry",
    "shared_quota",
    "shared_state",
]

PROVIDER_STATS_KEY = "provider_stats"


class ProviderService:
    """Capabilities, limits, quotas and call statistics of the registered providers."""

    def __init__(self, acquisition: Acquisition, catalog: JobCatalog) -> None:
        self.acquisition = acquisition
        self.catalog = catalog

    def table(self) -> pl.DataFrame:
        """Return one row per registered provider: capabilities and configured limits."""
        return capability_table(self.acquisition.registry, self.acquisition.settings)

    def load_errors(self) -> dict[str, str]:
        """Return plug-ins that failed to load, with the reason."""
        return dict(self.acquisition.registry.load_errors)

    def stats(self) -> tuple[dict[str, Any] | None, bool]:
        """Return call statistics and whether they are live (this process) or the last saved."""
        if self.acquisition.analytics.has_data:
            return self.acquisition.analytics.as_dict(), True
        return self.catalog.get_state(PROVIDER_STATS_KEY), False

    def save_stats(self) -> None:
        """Keep this process's statistics in the catalog for readers in other processes."""
        if self.acquisition.analytics.has_data:
            self.catalog.put_state(PROVIDER_STATS_KEY, self.acquisition.analytics.as_dict())


def shared_quota(settings: Settings) -> pl.DataFrame | None:
    """Return the live quota usage shared through Redis (None for the in-memory limiter).

    Needs no store: the quota lives in Redis, whoever uses it.
    """
    if settings.resilience.backend != "redis":
        return None
    limiter = RateLimiter.from_settings(
        settings.resilience, SystemClock(), redis_url=settings.services.redis_url
    )
    try:
        return limiter.usage_frame()
    finally:
        limiter.close()


def capability_table(registry: ProviderRegistry, settings: Settings) -> pl.DataFrame:
    """Return one row per registered provider: capabilities and configured limits.

    Needs no store: `qv providers` works before anything was ingested.
    """
    limits = settings.resilience.limits
    rows = []
    for name in registry.names():
        caps = registry.get(name).capabilities
        rows.append(
            {
                "provider": name,
                "timeframes": " ".join(sorted(caps.timeframes, key=_timeframe_order)),
                "assets": " ".join(sorted(a.value for a in caps.asset_classes)),
                "prices": _basis(caps.price_basis, caps.intraday_price_basis),
                "realtime": caps.realtime,
                "requires_key": caps.requires_key,
                "cost_per_call": caps.cost_per_call,
                "priority": caps.priority,
                "rate_limits": ", ".join(limits.get(name, [])),
            }
        )
    return pl.DataFrame(rows)


def _basis(daily: PriceBasis, intraday: PriceBasis | None) -> str:
    """Return the basis of a client's bars: one word, or daily/intraday when they differ."""
    if intraday is None or intraday is daily:
        return daily.value
    return f"{daily.value} (intraday {intraday.value})"


def _timeframe_order(tf: str) -> tuple[int, int]:
    from quantivista.errors import QuantiVistaError

    try:
        return Timeframe.parse(tf).sort_key()
    except QuantiVistaError:  # an odd timeframe string of a plug-in sorts last
        return (1 << 30, 0)


def shared_state(settings: Settings, providers: list[str]) -> pl.DataFrame | None:
    """Return the breakers and health every process shares through Redis (None: memory).

    One row per provider with a record: the breaker's last change in any process (state,
    when, why) and the health averaged over every process's calls.
    """
    if settings.resilience.backend != "redis":
        return None
    client = redis_client(settings.services.redis_url)
    prefix = state_prefix(settings.resilience.redis_prefix)
    breakers, health = RedisBreakerState(client, prefix), RedisHealthStore(client, prefix)
    rows = []
    try:
        for name in providers:
            record, seen = breakers.read(name), health.read(name)
            if record is None and seen is None:
                continue
            score = None if seen is None else ProviderHealth(**seen).score
            rows.append(
                {
                    "provider": name,
                    "breaker": record.state if record else None,
                    "changed_at": record.at if record else None,
                    "reason": record.reason if record else None,
                    "health": score,
                    "calls": seen["calls"] if seen else None,
                    "failures": seen["failures"] if seen else None,
                }
            )
    finally:
        client.close()
    return pl.DataFrame(
        rows,
        schema={"provider": pl.String, "breaker": pl.String, "changed_at": pl.Float64,
                "reason": pl.String, "health": pl.Float64, "calls": pl.Int64,
                "failures": pl.Int64},
    ).with_columns(
        pl.from_epoch(pl.col("changed_at"), time_unit="s").dt.replace_time_zone("UTC")
    )  # fmt: skip
