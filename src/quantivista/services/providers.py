"""Providers: what is registered, their limits, and how their calls went."""

from __future__ import annotations

from typing import Any

import polars as pl

from quantivista.acquisition.wiring import Acquisition
from quantivista.model.timeframe import Timeframe
from quantivista.storage.contracts import JobCatalog

__all__ = ["PROVIDER_STATS_KEY", "ProviderService"]

PROVIDER_STATS_KEY = "provider_stats"


class ProviderService:
    """Capabilities, limits, quotas and call statistics of the registered providers."""

    def __init__(self, acquisition: Acquisition, catalog: JobCatalog) -> None:
        self.acquisition = acquisition
        self.catalog = catalog

    def table(self) -> pl.DataFrame:
        """Return one row per registered provider: capabilities and configured limits."""
        registry = self.acquisition.registry
        limits = self.acquisition.settings.resilience.limits
        rows = []
        for name in registry.names():
            caps = registry.get(name).capabilities
            rows.append(
                {
                    "provider": name,
                    "timeframes": " ".join(sorted(caps.timeframes, key=_timeframe_order)),
                    "assets": " ".join(sorted(a.value for a in caps.asset_classes)),
                    "prices": caps.adjustment.value,
                    "realtime": caps.realtime,
                    "requires_key": caps.requires_key,
                    "cost_per_call": caps.cost_per_call,
                    "priority": caps.priority,
                    "rate_limits": ", ".join(limits.get(name, [])),
                }
            )
        return pl.DataFrame(rows)

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

    def shared_quota(self) -> pl.DataFrame | None:
        """Return the live quota usage when it is shared through Redis, else None."""
        if self.acquisition.settings.resilience.backend != "redis":
            return None
        return self.acquisition.limiter.usage_frame()


def _timeframe_order(tf: str) -> tuple[int, int]:
    from quantivista.errors import QuantiVistaError

    try:
        return Timeframe.parse(tf).sort_key()
    except QuantiVistaError:  # an odd timeframe string of a plug-in sorts last
        return (1 << 30, 0)
