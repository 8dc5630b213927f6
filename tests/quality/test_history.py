"""The numpy path of the history, series and session context gives the frame path's results
(`reference.FrameValidator`: joins, concats and sorts of frames, as the validator was)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.quality import history as history_module
from quantivista.quality.business import parse_rules
from quantivista.quality.history import merge_history
from quantivista.quality.rules import DEFAULT_RULES
from quantivista.quality.validate import ValidationResult, Validator, _arranged, _by_key
from quantivista.reference.calendars import get_calendar

from .conftest import lean_actions, lean_daily, same_result, split_at
from .reference import FrameValidator

_CAL = get_calendar("XNYS")
_GAP_RULES = DEFAULT_RULES + parse_rules({"max_gap": [{"max": "90s"}]})


def _both(
    rules: tuple, batch: pl.DataFrame, history: pl.DataFrame, actions: pl.DataFrame | None = None
) -> tuple[ValidationResult, ValidationResult]:
    fast = Validator(_CAL, rules).validate(batch, job_id="t", history=history, actions=actions)
    frames = FrameValidator(_CAL, rules).validate(
        batch, job_id="t", history=history, actions=actions
    )
    return fast, frames


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    history_minutes=st.integers(0, 90),
    batch_minutes=st.integers(1, 6),
    symbols=st.integers(1, 6),
    sorted_history=st.booleans(),
    gap_rule=st.booleans(),
    pending=st.sampled_from([0.0, 0.002, 0.05]),
)
def test_numpy_path_gives_the_frame_path_result(
    minutes: pl.DataFrame,
    seed: int,
    history_minutes: int,
    batch_minutes: int,
    symbols: int,
    sorted_history: bool,
    gap_rule: bool,
    pending: float,
) -> None:
    history, batch = split_at(
        minutes, seed, history_minutes, batch_minutes, symbols, pending=pending
    )
    if sorted_history:  # as the stream keeps it: minute after minute
        history = history.sort("ts", maintain_order=True)
    same_result(*_both(_GAP_RULES if gap_rule else DEFAULT_RULES, batch, history))


def test_micro_batch_of_one_minute_per_symbol(minutes: pl.DataFrame) -> None:
    """The stream's shape: one new minute per symbol, the hour before as history."""
    ts = minutes["ts"].unique().sort()
    cut = ts[200]
    history = minutes.filter(pl.col("ts").is_between(ts[140], cut, closed="left"))
    batch = minutes.filter(pl.col("ts") == cut)
    fast, frames = _both(DEFAULT_RULES, batch, history.sort("ts"))
    same_result(fast, frames)
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
    same_result(*_both(DEFAULT_RULES, batch, history, actions))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    history_minutes=st.integers(1, 120),
    symbols=st.integers(1, 6),
    pending=st.sampled_from([0.0, 0.002, 0.05]),
)
def test_history_looked_up_from_its_end_keeps_what_the_whole_lookup_keeps(
    minutes: pl.DataFrame, seed: int, history_minutes: int, symbols: int, pending: float
) -> None:
    """History in ts order is looked up from its end first; the kept bars and their
    places are those of a lookup of every stored bar."""
    stored, batch = split_at(
        minutes, seed, history_minutes, 2, symbols, moved=False, pending=pending
    )
    stored = stored.sort("ts", maintain_order=True)
    checked, marks = _arranged(batch)
    checked = _by_key(checked)
    rows, tail = Validator(_CAL)._history_rows(), Validator(_CAL)._neighbour_rows()
    one_tf = marks.one_timeframe
    got = merge_history(stored, checked, rows, tail, one_tf)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(history_module, "_SLACK", 1e9)  # every stored bar at once
        want = merge_history(stored, checked, rows, tail, one_tf)
    for name in ("rows", "series", "neighbour", "hist_at", "batch_at", "new"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


@settings(max_examples=100, deadline=None)
@given(
    names=st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=40),
    dropped=st.integers(0, 45),
    added=st.lists(st.sampled_from("ABCDEF"), max_size=10),
    changed=st.integers(-1, 40),
    categories=st.lists(st.sampled_from("ABCDEF"), min_size=1, max_size=6, unique=True),
)
def test_symbol_codes_reused_from_the_last_history_are_the_cast_codes(
    names: list[str], dropped: int, added: list[str], changed: int, categories: list[str]
) -> None:
    """A history that is the last one less its first rows plus new ones (a stream's) reuses
    the last codes; one that differs in a shared row (`changed`) is cast anew: both give
    the codes of a cast."""
    cats = pl.Series("symbol", categories)
    last = pl.Series("symbol", names)
    history_module._RECENT.entries = []
    history_module._symbol_codes(last, cats, np.arange(last.len()))
    now = [*names[dropped:], *added]
    if 0 <= changed < len(now):
        now[changed] = "F" if now[changed] != "F" else "A"
    if not now:
        return
    values = pl.Series("symbol", now)
    us = np.arange(len(now)) + min(dropped, len(names))  # the shared rows keep their ts
    got = history_module._symbol_codes(values, cats, us)
    np.testing.assert_array_equal(got, _cast_codes(values, cats))
    # the categories themselves (a stream's appended batch) are coded without a cast
    np.testing.assert_array_equal(history_module._codes(cats, cats), _cast_codes(cats, cats))


def test_symbol_codes_of_two_alternating_streams_are_each_reused() -> None:
    """Two streams of different symbol sets, their batches interleaved, each reuse their own
    last history's codes (one cache entry, replaced by the other stream's, never did)."""
    recent = history_module._RECENT
    recent.entries, recent.hits = [], 0
    streams = {
        "a": (pl.Series("symbol", ["A", "B"]), ["A", "B"] * 20),
        "b": (pl.Series("symbol", ["X", "Y", "Z"]), ["X", "Y", "Z"] * 20),
    }
    start = {"a": 0, "b": 0}
    for batch in range(4):
        for name, (cats, names) in streams.items():
            lo = start[name] = batch * cats.len()  # drop one batch's oldest, append a batch
            values = pl.Series("symbol", names[lo:] + cats.to_list() * batch)
            us = np.arange(values.len()) + lo
            got = history_module._symbol_codes(values, cats, us)
            np.testing.assert_array_equal(got, _cast_codes(values, cats))
    assert recent.hits == 6  # every lookup after each stream's first
    assert len(recent.entries) == 2


def test_symbol_code_cache_is_bounded_least_recently_used_out() -> None:
    recent = history_module._RECENT
    recent.entries = []
    sets = [pl.Series("symbol", [f"S{i}", f"T{i}"]) for i in range(recent.size + 2)]
    for cats in sets:
        history_module._symbol_codes(cats, cats, np.arange(2))
    history_module._symbol_codes(sets[2], sets[2], np.arange(2))  # used again: kept longest
    history_module._symbol_codes(sets[0], sets[0], np.arange(2))  # gone: cast, re-entered
    kept = [e.categories.to_list() for e in recent.entries]
    assert len(kept) == recent.size
    assert kept[-2:] == [sets[2].to_list(), sets[0].to_list()]
    assert sets[1].to_list() not in kept and sets[3].to_list() not in kept


@pytest.mark.parametrize("count", [1, 255, 256, 70_000])
def test_codes_of_absent_values_are_the_category_count_at_any_code_width(count: int) -> None:
    """Absent values get `count`, also when it does not fit the codes' own width (an Enum
    of up to 256 categories has 8-bit codes); values in several chunks too."""
    cats = pl.Series("symbol", [f"S{i}" for i in range(count)])
    values = pl.concat(
        [pl.Series("symbol", ["S0", "X", f"S{count - 1}"]), pl.Series("symbol", ["Y", "S0"])],
        rechunk=False,
    )
    got = history_module._codes(values, cats)
    np.testing.assert_array_equal(got, [0, count, count - 1, count, 0])
    np.testing.assert_array_equal(got, _cast_codes(values, cats))


def _cast_codes(values: pl.Series, categories: pl.Series) -> np.ndarray:
    codes = values.cast(pl.Enum(categories), strict=False).to_physical().cast(pl.Int64)
    return codes.fill_null(categories.len()).to_numpy()
