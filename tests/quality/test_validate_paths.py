"""The validator's shortcuts give what the general paths give.

A batch whose series arrive as blocks skips the sort; daily bars find their sessions in a
day table and their missing bars from those marks; rules that never fired add no flags;
day scores of a batch without rejects or flags are constants. Each test runs both ways.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantivista.errors import SchemaError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.model.timeframe import Timeframe
from quantivista.quality.validate import (
    ValidationResult,
    Validator,
    _sorted,
    day_scores,
)
from quantivista.reference.calendars import get_calendar

from .reference import FrameValidator, frame_day_scores

CAL = get_calendar("XNYS")
KEY = ["symbol", "timeframe", "ts"]


def _row(symbol: str, timeframe: str, ts: datetime, price: float, i: int) -> dict[str, Any]:
    return {
        "symbol": symbol, "timeframe": timeframe, "ts": ts,
        "open": price, "high": price + 2, "low": price - 2, "close": price + 1,
        "volume": 1000.0 + i, "vwap": price, "trades": 10, "provider": "p",
        "quality_flags": 0, "ingested_at": None, "job_id": "job",
    }  # fmt: skip


def _base_rows() -> list[dict[str, Any]]:
    """Two symbols: 12 daily sessions and the first 14 hourly bars of January 2024."""
    days = CAL.sessions("2024-01-02", "2024-01-18").to_list()
    hours = CAL.bar_starts("2024-01-02", "2024-01-03", "1h").to_list()
    rows = []
    for k, symbol in enumerate(["AAA", "BBB"]):
        for i, day in enumerate(days):
            ts = datetime(day.year, day.month, day.day, tzinfo=UTC)
            rows.append(_row(symbol, "1d", ts, 50.0 + 10 * k + i, i))
        for i, ts in enumerate(hours):
            rows.append(_row(symbol, "1h", ts, 80.0 + k + (i % 5), i))
    return rows


_CORRUPT = {
    "nan": lambda r: {**r, "close": math.nan},
    "null_open": lambda r: {**r, "open": None},
    "high_below_low": lambda r: {**r, "high": r["low"] * 0.5},
    "zero_volume": lambda r: {**r, "volume": 0.0},
    "misaligned": lambda r: {**r, "ts": r["ts"] + timedelta(minutes=7)},
    "weekend": lambda r: {**r, "ts": datetime(2024, 1, 6, tzinfo=UTC)},
    "wide_wick": lambda r: {**r, "low": r["low"] * 0.6},
}


@st.composite
def series_batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Damaged rows of two symbols in two timeframes, each series in ts order."""
    out: list[dict[str, Any]] = []
    for row in _base_rows():
        if draw(st.integers(0, 5)) == 0:
            continue  # a gap
        kind = draw(st.sampled_from([None, None, None, *sorted(_CORRUPT)]))
        new = _CORRUPT[kind](row) if kind else row
        out.append(new)
        repeat = draw(st.sampled_from([None, None, None, None, "exact", "conflict"]))
        if repeat == "exact":
            out.append({**new, "job_id": "again"})
        elif repeat == "conflict":
            out.append({**new, "open": (new["open"] or 1.0) * 1.5, "high": None})
    return out


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=BAR_POLARS_SCHEMA)


def _interleaved(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of each series in their order, series taking turns: not blocks any more."""
    by_series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_series.setdefault((row["symbol"], row["timeframe"]), []).append(row)
    queues = list(by_series.values())
    out = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def _same_result(a: ValidationResult, b: ValidationResult) -> None:
    assert a.clean.equals(b.clean)
    assert a.rejected.equals(b.rejected)
    assert a.exact_duplicates == b.exact_duplicates
    assert a.issues == b.issues
    assert a.scores.sort(a.scores.columns).equals(b.scores.sort(b.scores.columns))
    ra, rb = a.report.model_dump(), b.report.model_dump()
    pa, pb = ra.pop("data_profiling"), rb.pop("data_profiling")
    assert ra == rb
    # the profile describes the input as it came: sums in another order may round apart
    assert pa.keys() == pb.keys() and pa["rows"] == pb["rows"]
    for column, stats in pa.get("columns", {}).items():
        for name, value in stats.items():
            other = pb["columns"][column][name]
            assert value == other or value == pytest.approx(other, rel=1e-12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_batches())
def test_series_in_blocks_and_interleaved_series_give_the_same_result(
    rows: list[dict[str, Any]],
) -> None:
    blocks = _frame(rows).sort(KEY, maintain_order=True)  # no sort needed: the shortcut
    mixed = _frame(_interleaved(blocks.to_dicts()))  # the sort
    marks_blocks, marks_mixed = _sorted(blocks), _sorted(mixed)
    assert marks_blocks.equals(marks_mixed)
    assert not marks_blocks["_out_of_order"].any()
    validator = Validator(CAL)
    _same_result(validator.validate(blocks, job_id="j"), validator.validate(mixed, job_id="j"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_batches())
def test_missing_daily_bars_from_the_session_marks_equal_the_grid_lookup(
    rows: list[dict[str, Any]],
) -> None:
    validator = Validator(CAL)
    ordered = _sorted(_frame(rows).sort(KEY, maintain_order=True))
    daily = ordered.filter(pl.col("timeframe") == "1d")
    if daily.is_empty():
        return
    marked = validator._with_context(daily)
    assert {"_aligned", "_is_session"} <= set(marked.columns)
    from_marks = validator._missing_bars(marked)
    from_grid = validator._missing_bars(daily)  # no marks: ts looked up in the grid
    assert from_marks.equals(from_grid)


_TS = st.one_of(
    st.datetimes(datetime(1985, 1, 1), datetime(2035, 12, 31)),
    st.dates(date(1985, 1, 1), date(2035, 12, 31)).map(lambda d: datetime(d.year, d.month, d.day)),
)


_NEAR = st.tuples(_TS, st.lists(st.integers(-3 * 1440, 3 * 1440), min_size=1, max_size=40)).map(
    lambda t: [t[0] + timedelta(minutes=m) for m in t[1]]
)


_EDGES = pl.concat([CAL.schedule["open"], CAL.schedule["close"]]).dt.replace_time_zone(None)
# instants at and around session opens and closes (the edges of regular hours)
_AT_EDGES = st.lists(
    st.tuples(
        st.sampled_from(_EDGES.to_list()),
        st.sampled_from([0, 0, 0, -1, 1, -3, 3]),  # minutes: mostly on the edge itself
        st.sampled_from([0, 0, 1, 30]),  # seconds
    ),
    min_size=1,
    max_size=40,
).map(lambda edges: [e + timedelta(minutes=m, seconds=s) for e, m, s in edges])


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.lists(_TS, min_size=1, max_size=40), _NEAR, _AT_EDGES),
    st.sampled_from(["1m", "5m", "30m", "1h", "1d", "1w"]),
    st.booleans(),
)
def test_calendar_marks_equal_the_expressions(
    stamps: list[datetime], timeframe: str, with_calendar: bool
) -> None:
    """Grid, session and regular-hours marks from numpy equal the frame path's expressions
    and schedule join (wide spans take the calendar's conversion, near ones cached offsets)."""
    df = pl.DataFrame(
        {"ts": pl.Series(stamps, dtype=pl.Datetime("us")).dt.replace_time_zone("UTC")}
    )
    cal = CAL if with_calendar else None
    tf = Timeframe.parse(timeframe)
    got = Validator(cal)._grid_context(df, tf)
    want = FrameValidator(cal)._grid_context(df, tf)
    assert got.select(sorted(got.columns)).equals(want.select(sorted(want.columns)))


@pytest.mark.parametrize("timeframe", ["1m", "30m", "1h"])
def test_calendar_marks_at_every_session_edge_equal_the_schedule_join(timeframe: str) -> None:
    """Every open and close of 2022-2024 (early closes and clock changes among them), on
    the edge and a microsecond or a minute either side."""
    edges = _EDGES.filter(_EDGES.is_between(datetime(2022, 1, 1), datetime(2025, 1, 1)))
    us = edges.dt.epoch("us").to_numpy()
    shifted = np.concatenate([us + d for d in (0, -1, 1, -60_000_000, 60_000_000)])
    ts = pl.Series("ts", shifted).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    df = pl.DataFrame({"ts": ts})
    tf = Timeframe.parse(timeframe)
    got = Validator(CAL)._grid_context(df, tf)
    want = FrameValidator(CAL)._grid_context(df, tf)
    assert got.select(sorted(got.columns)).equals(want.select(sorted(want.columns)))
    assert got["_in_hours"].sum() > 0 and (~got["_in_hours"]).sum() > 0


def test_null_keys_are_refused() -> None:
    frame = _frame(_base_rows()[:4])
    for column in ("symbol", "timeframe", "ts"):
        broken = frame.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.col(column)))
        with pytest.raises(SchemaError, match="must not be null"):
            Validator(CAL).validate(broken, job_id="j")
        with pytest.raises(SchemaError, match="history"):
            Validator(CAL).validate(frame, job_id="j", history=broken)


def test_times_in_another_unit_or_zone_are_taken_in_utc_microseconds() -> None:
    frame = _frame(_base_rows())
    want = Validator(CAL).validate(frame, job_id="j")
    nanos = frame.with_columns(pl.col("ts").dt.cast_time_unit("ns"))
    local = frame.with_columns(pl.col("ts").dt.convert_time_zone("Asia/Tokyo"))
    for other in (nanos, local):
        _same_result(Validator(CAL).validate(other, job_id="j"), want)
    naive = frame.with_columns(pl.col("ts").dt.replace_time_zone(None))
    with pytest.raises(SchemaError, match="naive"):
        Validator(CAL).validate(naive, job_id="j")


_FLAG_BITS = [0, 0, 0, 1, 8, 256, 1 << 20, int(QualityFlag.OUT_OF_ORDER)]


@st.composite
def checked_frames(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A checked batch in any order (repeated keys too) and the bars it misses."""
    timeframes = draw(st.sampled_from([["1m"], ["1h"], ["1d"], ["1d", "1w"], ["1m", "1d"]]))
    base = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["A", "B", "C"]),
                st.sampled_from(timeframes),
                st.integers(0, 6 * 1440),
                st.booleans(),
                st.sampled_from(_FLAG_BITS),
            ),
            min_size=1,
            max_size=60,
        )
    )
    checked = pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "timeframe": [r[1] for r in rows],
            "ts": [base + timedelta(minutes=r[2]) for r in rows],
            "quality_flags": pl.Series([r[4] for r in rows], dtype=pl.UInt32),
            "_rejected": [r[3] for r in rows],
        }
    )
    gaps = draw(st.lists(st.tuples(st.sampled_from(["A", "B", "D"]), st.integers(0, 6 * 1440))))
    missing = pl.DataFrame(
        {"symbol": [g[0] for g in gaps], "ts": [base + timedelta(minutes=g[1]) for g in gaps]},
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")},
    )
    return checked, missing


@settings(max_examples=300, deadline=None)
@given(checked_frames())
def test_day_scores_from_runs_equal_the_group_by(case: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    checked, missing = case
    got = day_scores(checked, missing, "j")
    want = frame_day_scores(checked, missing, "j")
    assert got.schema == want.schema
    assert got.sort(got.columns).equals(want.sort(want.columns))


def test_a_batch_with_a_flag_but_no_rule_hit_keeps_its_flags_and_scores_them() -> None:
    rows = [r for r in _base_rows() if r["timeframe"] == "1d"]
    rows[3] = {**rows[3], "quality_flags": 1 << 20}  # a flag set upstream
    result = Validator(CAL).validate(_frame(rows), job_id="j")
    assert result.report.rule_counts == {}
    assert result.clean["quality_flags"].to_list().count(1 << 20) == 1
    assert result.scores["flagged"].sum() == 1
    assert result.report.quality_score == pytest.approx(1 - 0.5 / len(rows))


def test_blocks_need_not_come_in_symbol_order() -> None:
    frame = _frame(_base_rows()).sort(KEY)
    reversed_blocks = frame.sort("symbol", "timeframe", descending=True, maintain_order=True)
    result = Validator(CAL).validate(reversed_blocks, job_id="j")
    assert result.report.rule_counts == {}
    # the shortcut keeps the arrival order of the blocks (timeframe by timeframe)
    assert result.clean["symbol"][0] == "BBB"
    in_order = Validator(CAL).validate(frame, job_id="j").clean
    assert result.clean.sort(KEY).equals(in_order.sort(KEY))
