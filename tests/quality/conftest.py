"""Real price series with known corporate actions (tests/fixtures/corporate_actions)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantivista.model.schema import coerce_actions, coerce_bars

# copies of ../shared/fixtures/corporate_actions kept in the repository: a clone tests on its own
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "corporate_actions"


def lean_daily(symbol: str) -> pl.DataFrame:
    """Lean's raw daily bars (prices in USD x 10000) in the canonical schema."""
    path = FIXTURES / "lean" / "daily" / f"{symbol.lower()}.zip"
    with zipfile.ZipFile(path) as zf:
        text = zf.read(zf.namelist()[0])
    df = pl.read_csv(
        io.BytesIO(text),
        has_header=False,
        new_columns=["ts", "open", "high", "low", "close", "volume"],
        schema_overrides={"ts": pl.String},
    )
    df = df.with_columns(
        pl.col("ts").str.slice(0, 8).str.to_date("%Y%m%d"),
        pl.col("open", "high", "low", "close") / 10_000.0,
        symbol=pl.lit(symbol.upper()),
    )
    return coerce_bars(df, timeframe="1d", provider="lean")


def lean_actions(symbol: str, bars: pl.DataFrame) -> pl.DataFrame:
    """Splits and dividends recovered from Lean's factor file (README formulas)."""
    path = FIXTURES / "lean" / "factor_files" / f"{symbol.lower()}.csv"
    f = pl.read_csv(path, has_header=False, new_columns=["d", "pf", "sf", "ref"])
    f = f.with_columns(pl.col("d").cast(pl.String).str.to_date("%Y%m%d")).sort("d")
    steps = f.with_columns(
        split=pl.col("sf").shift(-1) / pl.col("sf"),
        cash=pl.col("ref") * (1 - pl.col("pf") / pl.col("pf").shift(-1)),
    ).head(-1)
    days = bars.select(ex_date=pl.col("ts").dt.date()).sort("ex_date")
    # the ex-date is the first trading day after the row's date
    steps = steps.join_asof(days, left_on="d", right_on="ex_date", strategy="forward",
                            allow_exact_matches=False)  # fmt: skip
    splits = steps.filter((pl.col("split") - 1).abs() > 1e-9).select(
        "ex_date", action_type=pl.lit("split"), ratio="split"
    )
    cash = steps.filter(pl.col("cash") > 1e-6).select(
        "ex_date", action_type=pl.lit("dividend"), amount="cash"
    )
    out = pl.concat([splits, cash], how="diagonal").with_columns(symbol=pl.lit(symbol.upper()))
    return coerce_actions(out.drop_nulls("ex_date"), provider="lean")


def av_daily(symbol: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Alpha Vantage raw daily bars and the splits/dividends on their ex-date rows."""
    df = pl.read_csv(FIXTURES / "alpha_vantage" / f"daily_adjusted_{symbol}.csv")
    df = df.with_columns(pl.col("timestamp").str.to_date(), symbol=pl.lit(symbol)).sort("timestamp")
    bars = coerce_bars(
        df.select("symbol", "open", "high", "low", "close", "volume", ts="timestamp"),
        timeframe="1d",
        provider="alpha_vantage",
    )
    splits = df.filter(pl.col("split_coefficient") != 1.0).select(
        "symbol", ex_date="timestamp", action_type=pl.lit("split"), ratio="split_coefficient"
    )
    divs = df.filter(pl.col("dividend_amount") > 0).select(
        "symbol", ex_date="timestamp", action_type=pl.lit("dividend"), amount="dividend_amount"
    )
    return bars, coerce_actions(pl.concat([splits, divs], how="diagonal"), provider="av")


def inject_spikes(
    bars: pl.DataFrame, count: int, seed: int = 0, protect: pl.Series | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Move the close of `count` isolated bars by 15-40% (OHLC kept consistent); return labels.

    Spiked bars are at least 3 bars apart and away from series ends and `protect` dates.
    """
    rng = np.random.default_rng(seed)
    n = bars.height
    candidates = np.arange(25, n - 2, 4)
    if protect is not None:
        days = bars["ts"].dt.date()
        near = days.is_in(protect.implode()).to_numpy()
        near = near | np.roll(near, 1) | np.roll(near, -1)
        candidates = candidates[~near[candidates]]
    picks = np.sort(rng.choice(candidates, size=count, replace=False))
    size = rng.uniform(0.15, 0.40, count) * rng.choice([-1.0, 1.0], count)
    factor = np.ones(n)
    factor[picks] = np.exp(size)
    out = bars.with_columns(close=pl.col("close") * pl.Series(factor)).with_columns(
        high=pl.max_horizontal("high", "close"), low=pl.min_horizontal("low", "close")
    )
    return out, bars[picks].select("symbol", "ts")


@pytest.fixture(scope="session")
def ibm() -> tuple[pl.DataFrame, pl.DataFrame]:
    bars = lean_daily("ibm")
    return bars, lean_actions("ibm", bars)


@pytest.fixture(scope="session")
def aapl() -> tuple[pl.DataFrame, pl.DataFrame]:
    bars = lean_daily("aapl")
    return bars, lean_actions("aapl", bars)
