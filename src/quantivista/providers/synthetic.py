"""`synthetic`: the offline provider that reads the seeded simulated market directly."""

from __future__ import annotations

import zlib
from datetime import date, timedelta
from typing import TYPE_CHECKING

import polars as pl

from quantivista.model.instruments import AssetClass
from quantivista.providers.base import (
    BarRequest,
    FetchResult,
    PriceBasis,
    Provider,
    ProviderCapabilities,
)
from quantivista.providers.simulator.faults import inject_faults
from quantivista.providers.simulator.market import HISTORY_START, SimulatedMarket

if TYPE_CHECKING:
    from quantivista.clock import Clock
    from quantivista.config import Settings

__all__ = ["SyntheticProvider"]


class SyntheticProvider(Provider):
    """Bars and corporate actions of the simulated market, with optional injected faults.

    Prices are raw (unadjusted). A ticker answers for the sessions in which it was in use:
    the old ticker of a renamed company up to the change, the new one from the change on,
    and nothing after a delisting.
    """

    name = "synthetic"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1m", "5m", "15m", "30m", "1h", "1d", "1w", "1mo"}),
        price_basis=PriceBasis.NONE,
        history_start=HISTORY_START,
        corporate_actions=True,
        priority=1000,  # last resort next to real vendors
        notes="seeded market model; fictional six-letter tickers",
    )

    def __init__(self, market: SimulatedMarket | None = None, *, fault_rate: float = 0.0) -> None:
        self._market = market
        self.fault_rate = fault_rate

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> SyntheticProvider:
        sim = settings.simulator
        market = SimulatedMarket(
            sim.seed, sim.universe_size, calendar=settings.ingest.calendar, as_of=clock.now().date()
        )
        return cls(market, fault_rate=sim.fault_rate)

    @property
    def market(self) -> SimulatedMarket:
        """Return the market model (built on first use with default settings)."""
        if self._market is None:
            self._market = SimulatedMarket()
        return self._market

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        market = self.market
        first, last = request.start_date, request.last_date
        bars = market.bars(request.symbol, first, last, request.timeframe)
        if not bars.is_empty():  # the request is half-open in UTC; days bound the draw only
            bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        labels = None
        if self.fault_rate > 0 and not bars.is_empty():
            seed = zlib.crc32(f"{request.symbol}|{request.timeframe}|{first}".encode())
            bars, labels = inject_faults(bars, self.fault_rate, seed=seed)
        actions = market.actions(request.symbol)
        actions = actions.filter(pl.col("ex_date").is_between(first, last + timedelta(days=0)))
        meta: dict[str, object] = {"instrument_id": market.instrument(request.symbol).instrument_id}
        if labels is not None:
            meta["injected_faults"] = labels.height
        return FetchResult(bars=bars, actions=actions, provider=self.name, metadata=meta)

    def symbols(self, on: date | None = None) -> list[str]:
        """Return the tickers trading on `on` (default: the latest simulated session)."""
        return self.market.symbols(on)
