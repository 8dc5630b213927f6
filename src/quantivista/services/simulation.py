"""The simulated market for demos and tests: its universe, and the provider simulator server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING

import polars as pl

from quantivista.acquisition.wiring import Acquisition
from quantivista.config import RateWindow, Settings, SimulatorServerSettings
from quantivista.errors import QuantiVistaError
from quantivista.providers.simulator.market import SimulatedMarket

if TYPE_CHECKING:
    from quantivista.providers.simulator.server import SimulatorHandle

__all__ = ["SimulationService", "free_tier_limits", "serve_simulator", "simulated_vendors"]


class SimulationService:
    """The seeded market behind the `synthetic` provider."""

    def __init__(self, acquisition: Acquisition) -> None:
        self.acquisition = acquisition

    def market(self) -> SimulatedMarket:
        """Return the market model of the `synthetic` provider."""
        market = getattr(self.acquisition.provider("synthetic"), "market", None)
        if not isinstance(market, SimulatedMarket):
            raise QuantiVistaError("the synthetic provider exposes no market model")
        return market

    def universe(self, first: date, last: date, size: int) -> list[str]:
        """Pick `size` tickers trading in the window, always including renamed/merged ones."""
        history = self.market().ticker_history()
        alive = history.filter(
            (pl.col("valid_from") <= last)
            & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= first))
        )
        special = alive.filter(pl.col("valid_to").is_not_null() | (pl.col("valid_from") > first))
        chosen = list(dict.fromkeys(special["symbol"].to_list()))
        for sym in alive["symbol"].to_list():  # a few hundred tickers at most
            if len(chosen) >= size:
                break
            if sym not in chosen:
                chosen.append(sym)
        return chosen


def simulated_vendors() -> tuple[str, ...]:
    """Return the vendors whose wire formats the simulator speaks."""
    from quantivista.providers.simulator.server import PROVIDERS

    return PROVIDERS


def free_tier_limits() -> dict[str, tuple[RateWindow, ...]]:
    """Return each simulated vendor's documented free-tier rate windows."""
    from quantivista.providers.simulator.server import FREE_TIER_LIMITS

    return dict(FREE_TIER_LIMITS)


@contextmanager
def serve_simulator(
    config: SimulatorServerSettings,
    settings: Settings,
    *,
    port: int | None = None,
    vendors: Sequence[str] | None = None,
    timeout_s: float | None = None,
) -> Iterator[tuple[SimulatorHandle, Settings]]:
    """Run the provider simulator; yield its handle and `settings` pointed at it."""
    from quantivista.providers.simulator.server import run_simulator
    from quantivista.providers.simulator.wiring import settings_for_simulator

    with run_simulator(config, port=port) as sim:
        names = tuple(vendors) if vendors is not None else simulated_vendors()
        yield sim, settings_for_simulator(settings, sim, names, timeout_s=timeout_s)
