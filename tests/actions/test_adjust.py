"""Adjustment on read against the real adjusted columns of Alpha Vantage and Lean files."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista import Platform
from quantivista.actions.adjust import adjust_bars, adjustment_factors, price_events
from quantivista.actions.lean import factor_file_actions, read_factor_file, read_lean_daily
from quantivista.actions.sources import alpha_vantage_actions
from quantivista.errors import InvalidInputError
from quantivista.model.schema import coerce_actions

from .conftest import LEAN, alpha_vantage_frame

TOLERANCE = 1e-6


def _max_rel(got: pl.Series, want: pl.Series) -> float:
    value = ((got / want) - 1.0).abs().max()
    assert isinstance(value, float)
    return value


def _store_alpha_vantage(p: Platform, symbol: str) -> pl.DataFrame:
    av = alpha_vantage_frame(symbol)
    p.write_bars(
        av.select("symbol", "ts", "open", "high", "low", "close", "volume"),
        source="alpha_vantage",
        timeframe="1d",
    )
    p.write_actions(alpha_vantage_actions(av), provider="alpha_vantage")
    return av


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT"])
def test_alpha_vantage_convention_matches_adjusted_close_every_day(
    platform: Platform, symbol: str
) -> None:
    av = _store_alpha_vantage(platform, symbol)
    got = platform.bars(symbol, adjust="all", dividend_convention="alpha_vantage")
    assert got.height == av.height
    assert _max_rel(got["close"], av["adjusted_close"]) < TOLERANCE
    # the other convention is measurably different on the same data (README: up to ~2e-3)
    crsp = platform.bars(symbol, adjust="all", dividend_convention="crsp")
    assert _max_rel(crsp["close"], av["adjusted_close"]) > 1e-4


def test_alpha_vantage_split_adjustment_scales_volume_inversely(platform: Platform) -> None:
    av = _store_alpha_vantage(platform, "AAPL")
    got = platform.bars("AAPL", adjust="splits", end="2000-06-20")
    raw = av.filter(pl.col("ts") <= pl.datetime(2000, 6, 20, time_zone="UTC"))
    # splits after 2000-06-20: 2 x 2 x 7.00000700001 x 4
    total = 2 * 2 * 7.00000700001 * 4
    assert _max_rel(got["close"], raw["close"] / total) < 1e-12
    assert _max_rel(got["volume"], raw["volume"] * total) < 1e-12


@pytest.mark.parametrize("symbol", ["aapl", "aig", "ibm", "spy"])
def test_crsp_convention_matches_lean_factor_files_every_day(
    platform: Platform, symbol: str
) -> None:
    bars = read_lean_daily(LEAN / "daily" / f"{symbol}.zip", symbol)
    factors = read_factor_file(LEAN / "factor_files" / f"{symbol}.csv")
    platform.write_bars(bars, source="lean")
    platform.write_actions(factor_file_actions(factors, symbol), provider="lean")
    sym = symbol.upper()
    want = (
        bars.with_columns(day=pl.col("ts").dt.date())
        .join_asof(factors, left_on="day", right_on="date", strategy="forward")
        .sort("ts")
    )
    full = platform.bars(sym, adjust="all", dividend_convention="crsp")
    splits = platform.bars(sym, adjust="splits")
    assert full.height == want.height == bars.height
    expected = want["close"] * want["price_factor"] * want["split_factor"]
    assert _max_rel(full["close"], expected) < TOLERANCE
    assert _max_rel(full["open"], want["open"] * want["price_factor"] * want["split_factor"]) < (
        TOLERANCE
    )
    assert _max_rel(splits["close"], want["close"] * want["split_factor"]) < TOLERANCE


def test_as_of_ignores_actions_after_that_day(platform: Platform) -> None:
    av = _store_alpha_vantage(platform, "AAPL")
    view = platform.bars(
        "AAPL", end="2014-06-06", adjust="splits", published="2014-06-30"
    )  # sees 2000, 2005 and 2014 splits, not 2020
    raw = av.filter(pl.col("ts") <= pl.datetime(2014, 6, 6, time_zone="UTC"))
    last = raw["close"][-1] / 7.00000700001
    assert view["close"][-1] == pytest.approx(last, rel=1e-12)


def test_new_action_invalidates_cached_view(platform: Platform, make_bars) -> None:  # type: ignore[no-untyped-def]
    bars = make_bars(["XYZ"], 10)
    platform.write_bars(bars, source="test")
    before = platform.bars("XYZ", adjust="all")
    assert before["close"].to_list() == bars["close"].to_list()
    ex = bars["ts"][5].date()
    platform.write_actions(
        pl.DataFrame({"symbol": ["XYZ"], "action_type": ["split"], "ex_date": [ex], "ratio": [2.0]})
    )
    after = platform.bars("XYZ", adjust="all")
    assert after["close"][:5].to_list() == pytest.approx((bars["close"][:5] / 2).to_list())
    assert after["close"][5:].to_list() == bars["close"][5:].to_list()
    assert after["volume"][0] == pytest.approx(bars["volume"][0] * 2)


def test_default_read_is_raw(platform: Platform, make_bars) -> None:  # type: ignore[no-untyped-def]
    bars = make_bars(["XYZ"], 4)
    platform.write_bars(bars, source="test")
    platform.write_actions(
        pl.DataFrame(
            {
                "symbol": ["XYZ"],
                "action_type": ["split"],
                "ex_date": [date(2024, 1, 4)],
                "ratio": [3.0],
            }
        )
    )
    assert platform.bars("XYZ")["close"].to_list() == bars["close"].to_list()


def test_unknown_mode_is_rejected(platform: Platform) -> None:
    with pytest.raises(InvalidInputError):
        platform.bars("XYZ", adjust="dividends")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        adjustment_factors(pl.DataFrame(), pl.DataFrame(), dividend_convention="yahoo")  # type: ignore[arg-type]


def test_dividend_without_reference_close_is_skipped_not_guessed() -> None:
    bars = pl.DataFrame(
        {
            "symbol": ["A", "A"],
            "ts": [date(2024, 1, 2), date(2024, 1, 3)],
            "close": [10.0, 11.0],
            "volume": [1.0, 1.0],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    acts = pl.DataFrame(
        {
            "symbol": ["A"],
            "action_type": ["dividend"],
            "ex_date": [date(2024, 1, 2)],  # no bar before: crsp has no C_prev
            "ratio": [None],
            "amount": [1.0],
        },
        schema_overrides={"ratio": pl.Float64},
    )
    assert adjust_bars(bars, acts, dividend_convention="crsp")["close"].to_list() == [10.0, 11.0]


def test_adjust_bars_keeps_the_callers_row_order_for_interleaved_symbols() -> None:
    days = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]
    bars = pl.DataFrame(
        {
            "symbol": ["B", "A", "B", "A", "B", "A"],
            "ts": [days[2], days[0], days[0], days[2], days[1], days[1]],
            "close": [30.0, 1.0, 10.0, 3.0, 20.0, 2.0],
            "volume": [1.0] * 6,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    acts = pl.DataFrame(
        {"symbol": ["B"], "action_type": ["split"], "ex_date": [days[2]], "ratio": [2.0]}
    )
    out = adjust_bars(bars, acts, adjust="splits")
    assert out["close"].to_list() == [30.0, 1.0, 5.0, 3.0, 10.0, 2.0]
    assert out["volume"].to_list() == [1.0, 1.0, 2.0, 1.0, 2.0, 1.0]


@given(
    closes=st.lists(st.floats(1.0, 1000.0), min_size=2, max_size=30),
    ratios=st.lists(st.sampled_from([0.05, 0.5, 2.0, 3.0, 7.0]), min_size=1, max_size=3),
    data=st.data(),
)
def test_split_adjustment_keeps_dollar_volume(
    closes: list[float], ratios: list[float], data: st.DataObject
) -> None:
    """Splits scale prices by 1/S and volumes by S: price x volume never changes."""
    days = pl.date_range(date(2024, 1, 1), date(2024, 3, 1), eager=True)[: len(closes)]
    bars = pl.DataFrame(
        {"symbol": "A", "ts": days, "close": closes, "volume": [100.0] * len(closes)}
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    ex = [data.draw(st.sampled_from(days.to_list())) for _ in ratios]
    acts = pl.DataFrame({"symbol": "A", "action_type": "split", "ex_date": ex, "ratio": ratios})
    out = adjust_bars(bars, acts, adjust="splits")
    before = (bars["close"] * bars["volume"]).to_list()
    assert (out["close"] * out["volume"]).to_list() == pytest.approx(before, rel=1e-12)
    # the last bar is never adjusted (no ex-date after it)
    assert out["close"][-1] == bars["close"][-1]


def test_price_events_are_the_actions_each_mode_counts() -> None:
    actions = coerce_actions(
        pl.DataFrame(
            {
                "symbol": ["A"] * 6,
                "action_type": [
                    "split", "stock_dividend", "dividend", "spinoff", "symbol_change", "split",
                ],
                "ex_date": [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9)],
                "ratio": [2.0, 1.05, None, None, None, 0.0],
                "amount": [None, None, 0.5, 3.0, None, None],
            }
        )
    )  # fmt: skip
    modes = ("none", "splits", "all")
    kinds = {m: price_events(actions, adjust=m)["action_type"].to_list() for m in modes}  # type: ignore[arg-type]
    assert kinds == {
        "none": [],
        "splits": ["split", "stock_dividend"],  # a ratio of 0 is no split
        "all": ["split", "stock_dividend", "dividend", "spinoff"],
    }
    assert price_events(actions, as_of=date(2024, 1, 3))["ex_date"].max() == date(2024, 1, 3)
