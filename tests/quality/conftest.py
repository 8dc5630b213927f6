"""Real price series with known corporate actions (tests/fixtures/corporate_actions)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantivista.model.flags import QualityFlag
from quantivista.model.schema import coerce_actions, coerce_bars
from quantivista.quality.validate import ValidationResult
from quantivista.reference.calendars import get_calendar
from quantivista.testing.minutes import session_minutes

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


# -- a batch of damaged minutes with stored history (test_history, test_validate_history) --
@pytest.fixture(scope="session")
def minutes() -> pl.DataFrame:
    """Six symbols' regular-session minutes over a weekend (2024-03-07 .. 03-11)."""
    return session_minutes(get_calendar("XNYS"), "2024-03-07", "2024-03-11", 6, seed=11)


def damaged(
    bars: pl.DataFrame, seed: int, *, moved: bool = True, pending: float = 0.05
) -> pl.DataFrame:
    """`bars` with jumps, flat runs, broken rows, old pending spikes (a `pending` share),
    repeats and arrival disorder at random, and (of several) one symbol trading one minute
    in five;
    `moved`: also times off the grid and outside the session."""
    rng = np.random.default_rng(seed)
    if bars["symbol"].n_unique() > 1:
        quiet = bars["symbol"] == bars["symbol"].min()
        bars = bars.filter(~(quiet & pl.Series(rng.random(bars.height) < 0.8)))
    n = bars.height
    close = bars["close"].to_numpy().copy()
    jump = rng.random(n) < 0.04
    close[jump] *= rng.choice([0.7, 0.8, 1.25, 1.3, 2.0], size=int(jump.sum()))
    flat = np.flatnonzero(rng.random(n) < 0.02)
    for i in flat:  # a run of identical closes (and opens: identical bars)
        close[i : i + 7] = close[i]
    out = bars.with_columns(close=pl.Series(close)).with_columns(
        open=pl.when(pl.Series(np.isin(np.arange(n), flat + 1)))
        .then(pl.col("close"))
        .otherwise(pl.col("open"))
    )
    if moved:  # pre/post market, a weekend, off the minute grid
        us = bars["ts"].to_numpy().view(np.int64).copy()
        shift = rng.random(n) < 0.03
        us[shift] += rng.choice([-5, 3, 48 * 60, 7], size=int(shift.sum())) * 60_000_000
        us[rng.random(n) < 0.02] += 30_000_000
        out = out.with_columns(ts=pl.Series(us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    out = out.with_columns(
        high=pl.max_horizontal("open", "high", "close"),
        low=pl.min_horizontal("open", "low", "close"),
    )
    broken = pl.Series(rng.random(n) < 0.02)
    old_spikes = pl.Series(rng.random(n) < pending)
    out = out.with_columns(
        low=pl.when(broken).then(pl.col("high") * 1.1).otherwise("low"),
        quality_flags=pl.when(old_spikes)
        .then(pl.col("quality_flags") | int(QualityFlag.SPIKE_PENDING))
        .otherwise(pl.col("quality_flags")),
    )
    again = out.sample(n=max(1, n // 40), seed=seed)
    return pl.concat([out, again]).sample(fraction=1.0, shuffle=True, seed=seed)


def split_at(
    minutes: pl.DataFrame,
    seed: int,
    history: int,
    batch: int,
    symbols: int,
    *,
    moved: bool = True,
    pending: float = 0.05,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A random window of `history` + `batch` minutes of the first `symbols` symbols,
    damaged, cut into (stored history, new batch); the batch comes without flags."""
    names = minutes["symbol"].unique().sort().head(symbols)
    part = minutes.filter(pl.col("symbol").is_in(names.implode()))
    ts = part["ts"].unique().sort()
    start = int(np.random.default_rng(seed).integers(0, ts.len() - history - batch))
    cut = ts[start + history]
    window = part.filter(pl.col("ts").is_between(ts[start], ts[start + history + batch - 1]))
    bars = damaged(window, seed, moved=moved, pending=pending)
    # a store answers one version of each bar (the newest): repeats are the batch's alone
    stored = bars.filter(pl.col("ts") < cut).unique(
        ["symbol", "timeframe", "ts"], keep="last", maintain_order=True
    )
    new = bars.filter(pl.col("ts") >= cut).with_columns(quality_flags=pl.lit(0, pl.UInt32))
    return stored, new


def same_result(a: ValidationResult, b: ValidationResult) -> None:
    """Both validations give the same rows, flags, decisions, scores, report and issues
    (rows and issues in any order)."""
    key = ["symbol", "timeframe", "ts", "quality_flags", "close"]
    assert a.clean.sort(key).equals(b.clean.sort(key))
    assert a.rejected.sort(key).equals(b.rejected.sort(key))
    assert a.decided.sort(key).equals(b.decided.sort(key))
    assert a.scores.sort("symbol", "date").equals(b.scores.sort("symbol", "date"))
    assert a.exact_duplicates == b.exact_duplicates
    ra, rb = a.report.model_dump(), b.report.model_dump()
    ia, ib = ra.pop("validation_errors"), rb.pop("validation_errors")
    assert ra == rb
    assert sorted(map(repr, ia)) == sorted(map(repr, ib))
