"""The provider contract: request ranges, BarRequest, capabilities, the base class."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import polars as pl
import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.errors import InvalidInputError
from quantivista.model.instruments import AssetClass
from quantivista.model.schema import ACTION_POLARS_SCHEMA
from quantivista.model.timeframe import Timeframe
from quantivista.providers.base import (
    AdjustmentBasis,
    BarRequest,
    FetchResult,
    PriceBasis,
    Provider,
    ProviderCapabilities,
    request_range,
)

US = timedelta(microseconds=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- request_range ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "lo", "hi"),
    [
        # a date as end includes that whole day
        ("2024-01-01", "2024-01-31", utc(2024, 1, 1), utc(2024, 2, 1)),
        (date(2024, 1, 1), date(2024, 1, 1), utc(2024, 1, 1), utc(2024, 1, 2)),
        ("2024-12-31", "2024-12-31", utc(2024, 12, 31), utc(2025, 1, 1)),
        ("2024-02-28", "2024-02-29", utc(2024, 2, 28), utc(2024, 3, 1)),
        # a datetime as end includes that instant, and only that
        ("2024-01-01", utc(2024, 1, 31, 16), utc(2024, 1, 1), utc(2024, 1, 31, 16) + US),
        ("2024-01-01", "2024-01-31T16:00:00Z", utc(2024, 1, 1), utc(2024, 1, 31, 16) + US),
        ("2024-01-01T14:30:00+00:00", "2024-01-01T15:00", utc(2024, 1, 1, 14, 30),
         utc(2024, 1, 1, 15) + US),
        # naive datetimes are UTC; aware ones are converted
        (datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10), utc(2024, 1, 1, 9),
         utc(2024, 1, 1, 10) + US),
        (datetime(2024, 1, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5))), "2024-01-02",
         utc(2024, 1, 1, 14, 30), utc(2024, 1, 3)),
    ],
)  # fmt: skip
def test_request_range_is_half_open_and_end_inclusive(
    start: str | date | datetime, end: str | date | datetime, lo: datetime, hi: datetime
) -> None:
    assert request_range(start, end) == (lo, hi)


def test_request_range_includes_the_last_daily_bar_of_the_end_date() -> None:
    lo, hi = request_range("2024-01-02", "2024-01-05")
    daily_bars = [utc(2024, 1, d) for d in (2, 3, 4, 5)]
    assert all(lo <= ts < hi for ts in daily_bars)
    assert not (lo <= utc(2024, 1, 6) < hi)


def test_request_range_rejects_garbage() -> None:
    with pytest.raises(InvalidInputError):
        request_range("last tuesday", "2024-01-01")
    with pytest.raises(InvalidInputError):
        request_range("2024-01-01", "2024-01-32")


# -- BarRequest ------------------------------------------------------------------------------
def test_bar_request_of_user_bounds() -> None:
    req = BarRequest.of("AAPL", "2024-01-01", "2024-01-31", "1day")
    assert req.symbol == "AAPL"
    assert req.timeframe == Timeframe(1, "d")
    assert (req.start, req.end) == (utc(2024, 1, 1), utc(2024, 2, 1))
    assert req.start_date == date(2024, 1, 1)
    assert req.last_date == date(2024, 1, 31)


def test_bar_request_default_timeframe_is_daily() -> None:
    assert BarRequest.of("A", "2024-01-01", "2024-01-01").timeframe == Timeframe(1, "d")


def test_bar_request_last_date_of_an_instant_end() -> None:
    req = BarRequest.of("A", "2024-01-01", utc(2024, 1, 3, 0, 0))
    assert req.last_date == date(2024, 1, 3)
    req = BarRequest("A", Timeframe(1, "m"), utc(2024, 1, 1), utc(2024, 1, 3))
    assert req.last_date == date(2024, 1, 2)


def test_bar_request_refuses_naive_bounds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BarRequest("A", Timeframe(1, "d"), datetime(2024, 1, 1), utc(2024, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        BarRequest("A", Timeframe(1, "d"), utc(2024, 1, 1), datetime(2024, 1, 2))


@pytest.mark.parametrize("end", [utc(2024, 1, 1), utc(2023, 12, 31)])
def test_bar_request_refuses_empty_or_reversed_ranges(end: datetime) -> None:
    with pytest.raises(ValueError, match="empty request range"):
        BarRequest("A", Timeframe(1, "d"), utc(2024, 1, 1), end)
    with pytest.raises(ValueError, match="empty request range"):
        BarRequest.of("A", "2024-01-05", "2024-01-01")


def test_bar_request_is_frozen_and_hashable() -> None:
    req = BarRequest.of("A", "2024-01-01", "2024-01-02")
    with pytest.raises(AttributeError):
        req.symbol = "B"  # type: ignore[misc]
    assert {req, BarRequest.of("A", "2024-01-01", "2024-01-02")} == {req}


# -- capabilities ----------------------------------------------------------------------------
CAPS = ProviderCapabilities(
    asset_classes=frozenset({AssetClass.EQUITY, AssetClass.ETF}),
    timeframes=frozenset({"1d", "1m"}),
)


@pytest.mark.parametrize(
    ("timeframe", "asset_class", "supported"),
    [
        ("1d", None, True),
        ("1day", None, True),  # any spelling of a served timeframe
        (Timeframe(1, "m"), AssetClass.ETF, True),
        ("60m", None, False),
        ("1h", None, False),
        ("1d", AssetClass.CRYPTO, False),
    ],
)
def test_capabilities_supports(
    timeframe: str | Timeframe, asset_class: AssetClass | None, supported: bool
) -> None:
    assert CAPS.supports(timeframe, asset_class) is supported


def test_capabilities_defaults() -> None:
    assert CAPS.price_basis is PriceBasis.NONE and CAPS.basis_for("1m") is PriceBasis.NONE
    assert CAPS.adjustment is AdjustmentBasis.RAW  # the former names still answer
    assert AdjustmentBasis is PriceBasis and PriceBasis.RAW is PriceBasis.NONE
    assert CAPS.realtime is False
    assert CAPS.requires_key is False
    assert CAPS.priority == 100


def test_the_price_basis_can_differ_between_daily_and_intraday_bars() -> None:
    caps = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1d", "1w", "1m"}),
        price_basis=PriceBasis.SPLITS,
        intraday_price_basis=PriceBasis.NONE,
    )
    assert caps.basis_for("1d") is PriceBasis.SPLITS
    assert caps.basis_for("1w") is PriceBasis.SPLITS
    assert caps.basis_for(Timeframe(1, "m")) is PriceBasis.NONE
    assert PriceBasis("splits_and_dividends") is PriceBasis.SPLITS_AND_DIVIDENDS


# -- the base class and results --------------------------------------------------------------
class Minimal(Provider):
    name = "minimal"
    capabilities = CAPS


def test_base_provider_defaults() -> None:
    provider = Minimal.from_settings(Settings(), TestClock())
    assert isinstance(provider, Minimal)
    assert repr(provider) == "<Minimal 'minimal'>"
    provider.close()
    with pytest.raises(NotImplementedError):
        provider.fetch_bars(BarRequest.of("A", "2024-01-01", "2024-01-02"))


def test_fetch_result_defaults_are_independent() -> None:
    a, b = FetchResult(bars=pl.DataFrame()), FetchResult(bars=pl.DataFrame())
    a.raw.append(None)  # type: ignore[arg-type]
    a.metadata["x"] = 1
    assert b.raw == [] and b.metadata == {}
    assert a.actions.schema == ACTION_POLARS_SCHEMA
    assert a.provider == ""
