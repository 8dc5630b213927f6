"""FX rates stored as bars: conversion, triangulation through USD, cross-rate checks."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from quantivista import Platform
from quantivista.errors import NotFoundError
from quantivista.reference.currencies import currency, is_currency
from quantivista.reference.exchanges import exchange
from quantivista.reference.fx import FxRates, is_pair

DAYS = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]


def _series(symbol: str, closes: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": symbol,
            "ts": DAYS,
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": [0.0] * 3,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


@pytest.fixture
def rates(tmp_path: Path) -> FxRates:
    p = Platform.open(tmp_path / "qv")
    p.write_bars(_series("EURUSD", [1.10, 1.20, 1.25]), source="fx", timeframe="1d")
    p.write_bars(_series("USDJPY", [140.0, 150.0, 160.0]), source="fx", timeframe="1d")
    # EURJPY: consistent on day 1 and 2 (1.1 x 140 = 154, 1.2 x 150 = 180), off on day 3
    p.write_bars(_series("EURJPY", [154.0, 180.0, 210.0]), source="fx", timeframe="1d")
    p.write_bars(_series("AAPL", [100.0, 101.0, 102.0]), source="x", timeframe="1d")
    return FxRates.from_store(p.runtime.backend.bars)


def test_pairs_load_from_the_store_like_bars(rates: FxRates) -> None:
    assert rates.pairs == {"EURUSD", "USDJPY", "EURJPY"}
    assert is_pair("EUR/USD") and not is_pair("AAPL") and not is_pair("USDUSD")


def test_convert_usd_bars_to_eur_inverts_the_pair(rates: FxRates) -> None:
    out = rates.convert(_series("AAPL", [110.0, 120.0, 125.0]), "EUR", "USD")
    assert out["close"].to_list() == pytest.approx([100.0, 100.0, 100.0])
    assert out["volume"].to_list() == [0.0, 0.0, 0.0]


def test_triangulation_through_usd(rates: FxRates) -> None:
    # without the stored cross, EUR -> JPY goes through USD; GBP has no series at all
    gbp_free = FxRates(rates.rates.filter(pl.col("symbol") != "EURJPY"))
    eurjpy = gbp_free.rate("EUR", "JPY")
    assert eurjpy["rate"].to_list() == pytest.approx([154.0, 180.0, 200.0])
    with pytest.raises(NotFoundError):
        gbp_free.rate("GBP", "JPY")


def test_triangular_check_flags_the_inconsistent_day(rates: FxRates) -> None:
    check = rates.triangular_check(tolerance=1e-3)
    assert check["inconsistent"].to_list() == [False, False, True]
    assert check["deviation"][2] == pytest.approx(210.0 / 200.0 - 1.0)


def test_currencies_and_exchanges() -> None:
    assert currency("jpy").decimals == 0 and currency("KWD").decimals == 3
    assert is_currency("EUR") and not is_currency("EUX")
    assert exchange("xnas").calendar == "XNYS"
    assert exchange("XLON").trading_calendar().is_session(date(2024, 1, 2))
    with pytest.raises(NotFoundError):
        exchange("XXXX")
