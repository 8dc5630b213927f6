"""The validator's shortcuts give what the general paths give.

A batch whose series arrive as blocks skips the sort; daily bars find their sessions in a
day table and their missing bars from those marks; rules that never fired add no flags;
day scores of a batch without rejects or flags are constants. Each test runs both ways.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantivista.model.schema import BAR_POLARS_SCHEMA
from quantivista.model.timeframe import Timeframe
from quantivista.quality import validate
from quantivista.quality.validate import (
    ValidationResult,
    Validator,
    _daily_marks,
    _day_scores,
    _sorted,
    day_scores,
)
from quantivista.reference.calendars import get_calendar

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


@settings(max_examples=200, deadline=None)
@given(st.lists(_TS, min_size=1, max_size=40))
def test_daily_marks_equal_the_expressions(stamps: list[datetime]) -> None:
    ts = pl.Series("ts", stamps, dtype=pl.Datetime("us")).dt.replace_time_zone("UTC")
    sessions = CAL.schedule["session"]
    marks = _daily_marks(ts, sessions)
    assert marks is not None
    want = pl.DataFrame({"ts": ts}).select(
        aligned=pl.col("ts").dt.truncate("1d") == pl.col("ts"),
        session=pl.col("ts").dt.date().is_in(sessions.implode()),
    )
    assert marks[0].to_list() == want["aligned"].to_list()
    assert marks[1].to_list() == want["session"].to_list()


def test_daily_marks_leave_other_timestamps_to_the_expressions() -> None:
    sessions = CAL.schedule["session"]
    with_null = pl.Series("ts", [datetime(2024, 1, 2), None], dtype=pl.Datetime("us", "UTC"))
    assert _daily_marks(with_null, sessions) is None
    nanos = pl.Series("ts", [datetime(2024, 1, 2)], dtype=pl.Datetime("ns", "UTC"))
    assert _daily_marks(nanos, sessions) is None


def _checked(rejected: list[bool], flags: list[int], timeframe: str = "1d") -> pl.DataFrame:
    n = len(rejected)
    start = datetime(2024, 1, 2, tzinfo=UTC)
    step = Timeframe.parse(timeframe).seconds or 86_400
    return pl.DataFrame(
        {
            "symbol": ["A"] * (n // 2) + ["B"] * (n - n // 2),
            "timeframe": [timeframe] * n,
            "ts": [start + timedelta(seconds=step * i) for i in range(n)],
            "quality_flags": pl.Series(flags, dtype=pl.UInt32),
            "_rejected": rejected,
        }
    )


@pytest.mark.parametrize("timeframe", ["1d", "1h"])
@pytest.mark.parametrize(
    ("rejected", "flags"),
    [
        ([False] * 6, [0] * 6),
        ([False] * 6, [0, 0, 8, 0, 0, 0]),
        ([False, True, False, False, False, False], [0, 1, 0, 0, 0, 0]),
        ([False, True, False, False, True, False], [0, 1, 8, 0, 2, 256]),
    ],
)
def test_day_scores_told_what_fired_equal_day_scores(
    timeframe: str, rejected: list[bool], flags: list[int]
) -> None:
    checked = _checked(rejected, flags, timeframe)
    scored = pl.col("quality_flags") & validate._SCORED_BITS != 0
    soft = checked.select((~pl.col("_rejected") & scored).any()).item()
    none = pl.DataFrame(schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")})
    told = _day_scores(
        checked, none, "j", [timeframe], any_rejected=any(rejected), any_flagged=soft
    )
    want = day_scores(checked, none, "j")
    assert told.schema == want.schema
    assert told.sort(told.columns).equals(want.sort(want.columns))


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
