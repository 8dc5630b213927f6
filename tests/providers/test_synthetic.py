from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import SymbolNotFoundError
from quantivista.model.schema import coerce_bars
from quantivista.providers.base import BarRequest
from quantivista.providers.registry import default_registry
from quantivista.providers.synthetic import SyntheticProvider

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def provider() -> SyntheticProvider:
    settings = Settings(simulator={"seed": 5, "universe_size": 8})
    made = default_registry.create("synthetic", settings, TestClock(NOW))
    assert isinstance(made, SyntheticProvider)
    return made


def test_the_registry_builds_it_from_settings_and_the_clock(provider: SyntheticProvider) -> None:
    assert provider.market.seed == 5
    assert provider.market.universe_size == 8
    assert provider.market.as_of == NOW.date()
    assert provider.capabilities.supports("1m") and provider.capabilities.supports("1mo")
    assert not provider.capabilities.supports("2h")


def test_fetch_returns_canonical_bars_inside_the_half_open_request(
    provider: SyntheticProvider,
) -> None:
    sym = provider.symbols()[3]
    req = BarRequest.of(sym, "2026-11-02", "2026-11-06", "1m")
    result = provider.fetch_bars(req)
    bars = coerce_bars(result.bars)
    assert bars.height == 5 * 390
    assert bars["ts"].min() >= req.start and bars["ts"].max() < req.end
    assert result.provider == "synthetic"
    assert result.metadata["instrument_id"].startswith("SIM")


def test_actions_come_with_the_bars_of_their_window(provider: SyntheticProvider) -> None:
    every = provider.market.actions()
    sym = every.filter(pl.col("action_type") == "dividend")["symbol"][0]
    result = provider.fetch_bars(BarRequest.of(sym, "2015-01-01", "2026-11-20"))
    inside = every.filter(
        (pl.col("symbol") == sym) & (pl.col("ex_date").is_between(pl.date(2015, 1, 1), NOW.date()))
    )
    assert result.actions.height == inside.height > 0


def test_a_delisted_ticker_returns_no_bars_after_it_stopped(provider: SyntheticProvider) -> None:
    merged = provider.market.actions().filter(pl.col("action_type") == "merger").row(0, named=True)
    result = provider.fetch_bars(BarRequest.of(merged["symbol"], merged["ex_date"], "2026-11-20"))
    assert result.bars.is_empty()


def test_unknown_symbols_raise(provider: SyntheticProvider) -> None:
    with pytest.raises(SymbolNotFoundError):
        provider.fetch_bars(BarRequest.of("NOSUCHX", "2026-01-01", "2026-01-31"))


def test_fault_rate_damages_bars_and_says_how_many() -> None:
    settings = Settings(simulator={"seed": 5, "universe_size": 8, "fault_rate": 0.05})
    provider = SyntheticProvider.from_settings(settings, TestClock(NOW))
    sym = provider.symbols()[0]
    result = provider.fetch_bars(BarRequest.of(sym, "2020-01-01", "2026-11-20"))
    injected = result.metadata["injected_faults"]
    assert 0.03 * 1700 < injected < 0.08 * 1800
    bad = result.bars.filter(
        (pl.col("high") < pl.col("low")) | (pl.col("volume") < 0) | pl.col("close").is_nan()
    )
    assert bad.height > 0
