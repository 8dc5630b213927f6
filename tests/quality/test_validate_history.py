"""The validator reads only the recent part of a long history: results must not change."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.model.flags import QualityFlag
from quantivista.quality.validate import ValidationResult, Validator, _with_sessions
from quantivista.reference.calendars import get_calendar
from quantivista.testing.minutes import session_minutes

_CAL = get_calendar("XNYS")
_MINUTES = session_minutes(_CAL, "2024-03-04", "2024-03-04", 6, seed=3)


class _WholeHistory(Validator):
    """The reference: every history row goes through the series checks."""

    def _history_rows(self) -> int:
        return 10**9

    def _neighbour_rows(self) -> int:
        return 10**9


def _damaged(bars: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Spikes, flat runs, bad rows, repeats and arrival disorder, at random."""
    rng = np.random.default_rng(seed)
    n = bars.height
    close = bars["close"].to_numpy().copy()
    jump = rng.random(n) < 0.03
    close[jump] *= rng.choice([0.8, 1.25, 2.0], size=int(jump.sum()))
    flat = np.flatnonzero(rng.random(n) < 0.02)
    for i in flat:  # a run of identical bars
        close[i : i + 7] = close[i]
    out = bars.with_columns(close=pl.Series(close)).with_columns(
        open=pl.when(pl.Series(np.isin(np.arange(n), flat + 1)))
        .then(pl.col("close"))
        .otherwise(pl.col("open")),
        high=pl.max_horizontal("open", "high", "close"),
        low=pl.min_horizontal("open", "low", "close"),
    )
    broken = pl.Series(rng.random(n) < 0.02)
    out = out.with_columns(low=pl.when(broken).then(pl.col("high") * 1.1).otherwise("low"))
    pending = pl.Series(rng.random(n) < 0.05)
    out = out.with_columns(
        quality_flags=pl.when(pending)
        .then(pl.col("quality_flags") | int(QualityFlag.SPIKE_PENDING))
        .otherwise(pl.col("quality_flags"))
    )
    again = out.sample(n=max(1, n // 50), seed=seed)
    return pl.concat([out, again]).sample(fraction=1.0, shuffle=True, seed=seed)


def _same(a: ValidationResult, b: ValidationResult) -> None:
    key = ["symbol", "timeframe", "ts", "quality_flags"]
    assert a.clean.sort(key).equals(b.clean.sort(key))
    assert a.rejected.sort(key).equals(b.rejected.sort(key))
    assert a.decided.sort(key).equals(b.decided.sort(key))
    assert a.scores.sort("symbol", "date").equals(b.scores.sort("symbol", "date"))
    assert a.report.rule_counts == b.report.rule_counts
    assert a.report.quality_score == b.report.quality_score
    assert sorted(map(repr, a.issues)) == sorted(map(repr, b.issues))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    history_minutes=st.integers(1, 120),
    batch_minutes=st.integers(1, 8),
)
def test_recent_history_gives_the_whole_history_result(
    seed: int, history_minutes: int, batch_minutes: int
) -> None:
    ts = _MINUTES["ts"].unique().sort()
    start = int(np.random.default_rng(seed).integers(0, ts.len() - history_minutes - 8))
    cut = ts[start + history_minutes]
    window = _MINUTES.filter(
        (pl.col("ts") >= ts[start]) & (pl.col("ts") < ts[start + history_minutes + batch_minutes])
    )
    bars = _damaged(window, seed)
    history = bars.filter(pl.col("ts") < cut)
    batch = bars.filter(pl.col("ts") >= cut).with_columns(quality_flags=pl.lit(0, pl.UInt32))
    fast = Validator(_CAL).validate(batch, job_id="t", history=history)
    whole = _WholeHistory(_CAL).validate(batch, job_id="t", history=history)
    _same(fast, whole)


def test_long_history_is_cut_but_pending_spikes_are_still_decided() -> None:
    bars = _MINUTES.filter(pl.col("symbol") == _MINUTES["symbol"][0]).head(200)
    close = bars["close"].to_numpy().copy()
    close[20] *= 1.5  # a spike left pending long ago, decided by the stored bar after it
    bars = bars.with_columns(
        close=pl.Series(close),
        quality_flags=pl.when(pl.int_range(pl.len()) == 20)
        .then(pl.lit(int(QualityFlag.SPIKE_PENDING), pl.UInt32))
        .otherwise(pl.col("quality_flags")),
    ).with_columns(high=pl.max_horizontal("high", "close"))
    history, batch = bars.head(180), bars.slice(180)
    fast = Validator(_CAL).validate(batch, job_id="t", history=history)
    whole = _WholeHistory(_CAL).validate(batch, job_id="t", history=history)
    _same(fast, whole)
    assert fast.decided.height == 1  # the old pending bar: confirmed as a spike
    assert fast.decided["quality_flags"][0] & int(QualityFlag.SPIKE)


@settings(max_examples=30, deadline=None)
@given(days=st.lists(st.integers(-40_000, 40_000), min_size=1, max_size=50))
def test_sessions_by_search_match_the_schedule_join(days: list[int]) -> None:
    day = pl.Series("_day", days, dtype=pl.Int32).cast(pl.Date)
    df = pl.DataFrame({"x": range(len(days))})
    joined = df.with_columns(day).join(
        _CAL.schedule.select(
            pl.col("session").alias("_day"),
            pl.col("open").alias("_open"),
            pl.col("close").alias("_close"),
        ),
        on="_day",
        how="left",
        maintain_order="left",
    )
    assert _with_sessions(df, day, _CAL.schedule).equals(joined)


def test_history_at_or_after_the_batch_is_ignored() -> None:
    batch = _MINUTES.head(120)
    told = Validator(_CAL).validate(batch, job_id="t", history=batch)
    alone = Validator(_CAL).validate(batch, job_id="t")
    _same(told, alone)
    assert told.decided.is_empty()
