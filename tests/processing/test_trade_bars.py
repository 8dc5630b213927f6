"""Trades -> 1-minute bars by event time: any split into micro-batches gives the same bars."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.processing.trade_bars import TRADE_SCHEMA, MinuteBars

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)


def trades(rows: list[tuple[str, float, float, float]]) -> pl.DataFrame:
    """Rows of (symbol, seconds after T0, price, size)."""
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "ts": [T0 + timedelta(seconds=r[1]) for r in rows],
            "price": [r[2] for r in rows],
            "size": [r[3] for r in rows],
            "provider": ["sim"] * len(rows),
        },
        schema=TRADE_SCHEMA,
    )


def expected(frame: pl.DataFrame) -> pl.DataFrame:
    """Bars computed in one go, the plain way."""
    return (
        frame.sort("ts")
        .group_by("symbol", pl.col("ts").dt.truncate("1m"))
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("size").sum(),
            trades=pl.len().cast(pl.Int64),
        )
        .sort("symbol", "ts")
    )


def test_bars_close_when_the_watermark_passes_their_end() -> None:
    bars = MinuteBars(lateness=timedelta(seconds=2))
    out = bars.add(trades([("A", 1, 10.0, 1), ("A", 30, 12.0, 1), ("A", 59, 11.0, 2)]))
    assert out.bars.is_empty() and bars.open_bars == 1
    out = bars.add(trades([("A", 61, 11.5, 1)]))  # watermark 59s: the minute is not over
    assert out.bars.is_empty()
    out = bars.add(trades([("A", 62.5, 11.7, 1)]))  # watermark 60.5s: it is
    assert out.bars.select("open", "high", "low", "close", "volume", "trades").row(0) == (
        10.0, 12.0, 10.0, 11.0, 4.0, 3,
    )  # fmt: skip
    assert out.bars["vwap"][0] == (10 + 12 + 22) / 4
    assert out.corrections.is_empty()
    # canonical bars, clean and without lineage until a writer takes them
    assert out.bars.schema == BAR_POLARS_SCHEMA
    assert out.bars.select("timeframe", "quality_flags", "ingested_at", "job_id").row(0) == (
        "1m", 0, None, None,
    )  # fmt: skip


def test_a_late_trade_amends_its_bar_and_is_released_as_a_correction() -> None:
    bars = MinuteBars(lateness=timedelta(seconds=1))
    bars.add(trades([("A", 10, 10.0, 1), ("A", 50, 11.0, 1)]))
    first = bars.add(trades([("A", 75, 11.0, 1)]))
    assert first.bars["close"].to_list() == [11.0]
    late = bars.add(trades([("A", 5, 9.0, 3), ("A", 55, 13.0, 1)]))  # both in the closed minute
    assert late.bars.is_empty()
    row = late.corrections.select("ts", "open", "high", "low", "close", "volume").row(0)
    assert row == (T0, 9.0, 13.0, 9.0, 13.0, 6.0)
    assert bars.corrected == 1


def test_trades_older_than_the_retention_are_counted_and_dropped() -> None:
    bars = MinuteBars(lateness=timedelta(seconds=1), retention=timedelta(minutes=5))
    bars.add(trades([("A", 0, 10.0, 1), ("A", 600, 10.0, 1)]))
    out = bars.add(trades([("A", 30, 99.0, 1)]))
    assert out.too_late == 1 and out.corrections.is_empty() and bars.too_late == 1


def test_flush_releases_open_bars() -> None:
    bars = MinuteBars()
    bars.add(trades([("A", 0, 10.0, 1), ("B", 3, 20.0, 1)]))
    out = bars.flush()
    assert out.bars["symbol"].to_list() == ["A", "B"] and bars.open_bars == 0


def test_the_clock_closes_a_quiet_minute() -> None:
    bars = MinuteBars(lateness=timedelta(seconds=1), idle=timedelta(seconds=5))
    bars.add(trades([("A", 0, 10.0, 1)]))
    out = bars.add(trades([]), now=T0 + timedelta(seconds=70))
    assert out.bars.height == 1


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_any_split_into_micro_batches_gives_the_bars_of_the_whole(
    seed: int, n: int, cuts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, 300, n))
    # arrival order: mostly in time order, a few trades up to 90 s late
    arrival = seconds + np.where(rng.random(n) < 0.1, rng.uniform(0, 90, n), 0)
    order = np.argsort(arrival, kind="stable")
    frame = trades(
        [
            (str(rng.choice(["A", "B", "C"])), float(seconds[i]), float(rng.uniform(1, 2)),
             float(rng.integers(1, 10)))
            for i in order
        ]
    )  # fmt: skip
    bars = MinuteBars(lateness=timedelta(seconds=2), retention=timedelta(hours=1))
    released: list[pl.DataFrame] = []
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    for lo, hi in itertools.pairwise(bounds):
        out = bars.add(frame.slice(lo, hi - lo))
        released += [out.bars, out.corrections]
    released.append(bars.flush().bars)
    # the last version of each bar is the bar of all its trades
    final = (
        pl.concat(released)
        .with_row_index("_n")
        .sort("_n")
        .group_by("symbol", "ts")
        .last()
        .sort("symbol", "ts")
        .select("symbol", "ts", "open", "high", "low", "close", "volume", "trades")
    )
    want = expected(frame)
    assert final.select("symbol", "ts", "high", "low", "volume", "trades").equals(
        want.select("symbol", "ts", "high", "low", "volume", "trades")
    )
    assert np.allclose(final["open"].to_numpy(), want["open"].to_numpy())
    assert np.allclose(final["close"].to_numpy(), want["close"].to_numpy())
    assert bars.open_bars == 0


def test_a_late_trade_of_a_new_bar_is_released_though_the_watermark_stays() -> None:
    bars = MinuteBars(lateness=timedelta(seconds=2))
    bars.add(trades([("A", 1, 10.0, 1)]))
    out = bars.add(trades([("A", 70, 11.0, 1)]))  # watermark 68 s: minute 0 of A is over
    assert out.bars["symbol"].to_list() == ["A"]
    out = bars.add(trades([("A", 71, 11.0, 1)]))  # nothing new is over: nothing released
    assert out.bars.is_empty() and out.corrections.is_empty()
    # B trades late in minute 0, which is over: its bar goes out at once, not as a correction
    out = bars.add(trades([("B", 30, 5.0, 2)]))
    assert out.bars.select("symbol", "close", "volume").rows() == [("B", 5.0, 2.0)]
    assert out.corrections.is_empty()
    out = bars.add(trades([("B", 40, 6.0, 1)]))  # and a later one amends it
    assert out.corrections.select("symbol", "close", "volume").rows() == [("B", 6.0, 3.0)]
