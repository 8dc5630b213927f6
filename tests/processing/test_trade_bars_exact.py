"""The fold gives bit-identical bars to the session-8 fold (kept here as the reference):
the same float sums (the same additions in the same order), out-of-order and late trades."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.processing import trade_bars
from quantivista.processing.trade_bars import _STATE, TRADE_SCHEMA, MinuteBars, Released

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
_KEY = ["symbol", "ts"]


def reference_aggregate(trades: pl.DataFrame, every_us: int) -> pl.DataFrame:
    if not trades["ts"].is_sorted():
        trades = trades.sort("ts", maintain_order=True)
    start = (pl.col("ts").dt.epoch("us") // every_us * every_us).cast(pl.Datetime("us", "UTC"))
    return (
        trades.group_by("symbol", start.alias("_start"))
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("size").sum(),
            pv=(pl.col("price") * pl.col("size")).sum(),
            trades=pl.len().cast(pl.Int64),
            first_ts=pl.col("ts").first(),
            last_ts=pl.col("ts").last(),
            provider=pl.col("provider").last(),
        )
        .rename({"_start": "ts"})
        .select(_STATE.names())
    )


def reference_merge(state: pl.DataFrame, part: pl.DataFrame) -> pl.DataFrame:
    if state.is_empty():
        return part
    if part.is_empty():
        return state
    return (
        pl.concat([state, part])
        .group_by(_KEY)
        .agg(
            open=pl.col("open").sort_by("first_ts", maintain_order=True).first(),
            high=pl.col("high").max(),
            low=pl.col("low").min(),
            close=pl.col("close").sort_by("last_ts", maintain_order=True).last(),
            volume=pl.col("volume").sum(),
            pv=pl.col("pv").sum(),
            trades=pl.col("trades").sum(),
            first_ts=pl.col("first_ts").min(),
            last_ts=pl.col("last_ts").max(),
            provider=pl.col("provider").last(),
        )
        .select(_STATE.names())
    )


def feed(seed: int, n: int, symbols: int) -> pl.DataFrame:
    """Trades over 5 minutes, arriving mostly in time order, some up to 90 s late (prices
    and sizes spread over decades, so float sums depend on their order)."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, 300, n))
    arrival = seconds + np.where(rng.random(n) < 0.15, rng.uniform(0, 90, n), 0)
    order = np.argsort(arrival, kind="stable")
    return pl.DataFrame(
        {
            "symbol": rng.choice([f"S{i}" for i in range(symbols)], n),
            "ts": [T0 + timedelta(seconds=float(s)) for s in seconds[order]],
            "price": rng.uniform(1, 500, n) * np.exp(rng.normal(0, 2, n)),
            "size": rng.integers(1, 1000, n) * np.exp(rng.normal(0, 2, n)),
            "provider": rng.choice(["a", "b"], n),
        },
        schema=TRADE_SCHEMA,
    )


def run(frame: pl.DataFrame, cuts: list[int]) -> list[Released]:
    bars = MinuteBars(lateness=timedelta(seconds=2), retention=timedelta(seconds=60))
    bounds = sorted({0, frame.height, *[c for c in cuts if c < frame.height]})
    out = [bars.add(frame.slice(lo, hi - lo)) for lo, hi in itertools.pairwise(bounds)]
    return [*out, bars.flush()]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 1200),
    symbols=st.integers(1, 8),
    cuts=st.lists(st.integers(0, 1200), max_size=10),
)
def test_the_fold_equals_the_reference_fold_bit_for_bit(
    seed: int, n: int, symbols: int, cuts: list[int]
) -> None:
    frame = feed(seed, n, symbols)
    got = run(frame, cuts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trade_bars, "_aggregate", reference_aggregate)
        patch.setattr(trade_bars, "_merge", reference_merge)
        want = run(frame, cuts)
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.too_late == theirs.too_late
        assert mine.bars.equals(theirs.bars)
        assert mine.corrections.equals(theirs.corrections)


def test_the_partial_bars_equal_the_reference_exactly() -> None:
    """Unordered trades, one frame: every column equal, float sums included."""
    frame = feed(7, 900, 5)
    every = 60_000_000
    got = trade_bars._aggregate(frame, every).sort(_KEY)
    want = reference_aggregate(frame, every).sort(_KEY)
    assert got.schema == _STATE
    assert got.equals(want)
    merged = trade_bars._merge(want, trade_bars._aggregate(feed(8, 900, 5), every)).sort(_KEY)
    assert merged.equals(
        reference_merge(want, reference_aggregate(feed(8, 900, 5), every)).sort(_KEY)
    )
