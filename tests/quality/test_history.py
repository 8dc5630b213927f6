"""The numpy path of the history and session context gives the frame path's results."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.model.flags import QualityFlag
from quantivista.quality import validate as validate_module
from quantivista.quality.business import parse_rules
from quantivista.quality.rules import DEFAULT_RULES
from quantivista.quality.validate import ValidationResult, Validator
from quantivista.reference.calendars import get_calendar
from quantivista.testing.minutes import session_minutes

from .conftest import lean_actions, lean_daily

_CAL = get_calendar("XNYS")
_MINUTES = session_minutes(_CAL, "2024-03-07", "2024-03-11", 5, seed=11)
_GAP_RULES = DEFAULT_RULES + parse_rules({"max_gap": [{"max": "90s"}]})


def _damaged(bars: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Jumps, flat runs, broken rows, off-grid and off-session times, repeats, disorder."""
    rng = np.random.default_rng(seed)
    n = bars.height
    close = bars["close"].to_numpy().copy()
    jump = rng.random(n) < 0.05
    close[jump] *= rng.choice([0.7, 1.3, 2.0], size=int(jump.sum()))
    flat = np.flatnonzero(rng.random(n) < 0.02)
    for i in flat:
        close[i : i + 6] = close[i]
    us = bars["ts"].to_numpy().view(np.int64).copy()
    moved = rng.random(n) < 0.03  # pre/post market, a weekend, off the minute grid
    us[moved] += rng.choice([-5, 3, 48 * 60, 7], size=int(moved.sum())) * 60_000_000
    us[rng.random(n) < 0.02] += 30_000_000
    out = bars.with_columns(
        close=pl.Series(close),
        ts=pl.Series(us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    ).with_columns(
        high=pl.max_horizontal("open", "high", "close"),
        low=pl.min_horizontal("open", "low", "close"),
    )
    broken = pl.Series(rng.random(n) < 0.02)
    out = out.with_columns(
        low=pl.when(broken).then(pl.col("high") * 1.1).otherwise("low"),
        quality_flags=pl.when(pl.Series(rng.random(n) < 0.05))
        .then(pl.col("quality_flags") | int(QualityFlag.SPIKE_PENDING))
        .otherwise(pl.col("quality_flags")),
    )
    again = out.sample(n=max(1, n // 40), seed=seed)
    return pl.concat([out, again]).sample(fraction=1.0, shuffle=True, seed=seed)


def _same(a: ValidationResult, b: ValidationResult) -> None:
    key = ["symbol", "timeframe", "ts", "quality_flags", "close"]
    assert a.clean.sort(key).equals(b.clean.sort(key))
    assert a.rejected.sort(key).equals(b.rejected.sort(key))
    assert a.decided.sort(key).equals(b.decided.sort(key))
    assert a.scores.sort("symbol", "date").equals(b.scores.sort("symbol", "date"))
    assert a.report.model_dump() == b.report.model_dump()
    assert a.exact_duplicates == b.exact_duplicates


def _both(
    v: Validator, batch: pl.DataFrame, history: pl.DataFrame
) -> tuple[ValidationResult, ValidationResult]:
    fast = v.validate(batch, job_id="t", history=history)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(validate_module, "_FRAME_PATH", True)
        frames = v.validate(batch, job_id="t", history=history)
    return fast, frames


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    history_minutes=st.integers(0, 90),
    batch_minutes=st.integers(1, 6),
    symbols=st.integers(1, 5),
    sorted_history=st.booleans(),
    gap_rule=st.booleans(),
)
def test_numpy_path_gives_the_frame_path_result(
    seed: int,
    history_minutes: int,
    batch_minutes: int,
    symbols: int,
    sorted_history: bool,
    gap_rule: bool,
) -> None:
    names = _MINUTES["symbol"].unique().sort().head(symbols)
    minutes = _MINUTES.filter(pl.col("symbol").is_in(names.implode()))
    ts = minutes["ts"].unique().sort()
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, ts.len() - history_minutes - batch_minutes))
    cut = ts[start + history_minutes]
    window = minutes.filter(
        (pl.col("ts") >= ts[start]) & (pl.col("ts") < ts[start + history_minutes + batch_minutes])
    )
    bars = _damaged(window, seed)
    history = bars.filter(pl.col("ts") < cut)
    if sorted_history:  # as the stream keeps it: minute after minute
        history = history.sort("ts", maintain_order=True)
    batch = bars.filter(pl.col("ts") >= cut).with_columns(quality_flags=pl.lit(0, pl.UInt32))
    v = Validator(_CAL, _GAP_RULES if gap_rule else DEFAULT_RULES)
    _same(*_both(v, batch, history))


def test_micro_batch_of_one_minute_per_symbol() -> None:
    """The stream's shape: one new minute per symbol, the hour before as history."""
    ts = _MINUTES["ts"].unique().sort()
    cut = ts[200]
    history = _MINUTES.filter(pl.col("ts").is_between(ts[140], cut, closed="left"))
    batch = _MINUTES.filter(pl.col("ts") == cut)
    fast, frames = _both(Validator(_CAL), batch, history.sort("ts"))
    _same(fast, frames)
    assert fast.clean.height == batch.height


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(30, 2_000), days=st.integers(1, 30))
def test_daily_batches_with_history_and_actions_match_the_frame_path(cut: int, days: int) -> None:
    """The nightly shape: a few new sessions of real split and dividend histories."""
    bars = pl.concat([lean_daily(s) for s in ("aapl", "ibm")])
    actions = pl.concat(
        [lean_actions(s, bars.filter(pl.col("symbol") == s.upper())) for s in ("aapl", "ibm")]
    )
    ts = bars["ts"].unique().sort()
    start, end = ts[min(cut, ts.len() - days - 1)], ts[min(cut + days, ts.len() - 1)]
    history = bars.filter(pl.col("ts") < start)
    batch = bars.filter(pl.col("ts").is_between(start, end, closed="left"))
    v = Validator(_CAL)
    fast = v.validate(batch, job_id="t", history=history, actions=actions)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(validate_module, "_FRAME_PATH", True)
        frames = v.validate(batch, job_id="t", history=history, actions=actions)
    _same(fast, frames)
