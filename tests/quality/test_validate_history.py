"""The validator reads only the recent part of a long history: results must not change."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.model.flags import QualityFlag
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar

from .conftest import same_result, split_at

_CAL = get_calendar("XNYS")


class _WholeHistory(Validator):
    """The reference: every history row goes through the series checks."""

    def _history_rows(self) -> int:
        return 10**9

    def _neighbour_rows(self) -> int:
        return 10**9


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    history_minutes=st.integers(1, 120),
    batch_minutes=st.integers(1, 8),
)
def test_recent_history_gives_the_whole_history_result(
    minutes: pl.DataFrame, seed: int, history_minutes: int, batch_minutes: int
) -> None:
    history, batch = split_at(minutes, seed, history_minutes, batch_minutes, 6, moved=False)
    fast = Validator(_CAL).validate(batch, job_id="t", history=history)
    whole = _WholeHistory(_CAL).validate(batch, job_id="t", history=history)
    same_result(fast, whole)


def test_long_history_is_cut_but_pending_spikes_are_still_decided(minutes: pl.DataFrame) -> None:
    bars = minutes.filter(pl.col("symbol") == minutes["symbol"][0]).head(200)
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
    same_result(fast, whole)
    assert fast.decided.height == 1  # the old pending bar: confirmed as a spike
    assert fast.decided["quality_flags"][0] & int(QualityFlag.SPIKE)


def test_history_at_or_after_the_batch_is_ignored(minutes: pl.DataFrame) -> None:
    batch = minutes.head(120)
    told = Validator(_CAL).validate(batch, job_id="t", history=batch)
    alone = Validator(_CAL).validate(batch, job_id="t")
    same_result(told, alone)
    assert told.decided.is_empty()


def test_history_in_another_time_unit_is_taken_in_utc_microseconds(minutes: pl.DataFrame) -> None:
    history, batch = split_at(minutes, 5, 60, 2, 6, moved=False)
    nanos = history.with_columns(pl.col("ts").dt.cast_time_unit("ns"))
    local = history.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York"))
    want = Validator(_CAL).validate(batch, job_id="t", history=history)
    assert want.decided.height  # the history counts: its pending spikes are decided
    for other in (nanos, local):
        same_result(Validator(_CAL).validate(batch, job_id="t", history=other), want)
