"""The validator: each rule, duplicates, calendar gaps, the score, and no row ever lost."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import Severity
from quantivista.model.schema import BAR_COLUMNS, BAR_POLARS_SCHEMA, coerce_bars
from quantivista.quality.rules import DEFAULT_RULES, ROW_RULES
from quantivista.quality.validate import ValidationResult, Validator, profile
from quantivista.reference.calendars import TradingCalendar, get_calendar

ERROR_BITS = 0
for _rule in DEFAULT_RULES:
    if _rule.severity is Severity.ERROR:
        ERROR_BITS |= int(_rule.flag)
RULE_MESSAGES = {r.name: r.message for r in DEFAULT_RULES}

MakeBars = Callable[..., pl.DataFrame]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def minute_ts(start: datetime, count: int, step_min: int = 1) -> list[datetime]:
    return [start + timedelta(minutes=step_min * i) for i in range(count)]


def intraday(times: list[datetime], timeframe: str = "1m", symbol: str = "AAA") -> pl.DataFrame:
    """Return well-formed intraday bars at `times`."""
    n = len(times)
    drift = [0.01 * (i % 7) for i in range(n)]  # no two neighbours alike: not a stale feed
    return coerce_bars(
        {
            "symbol": [symbol] * n,
            "ts": times,
            "open": [10.0 + d for d in drift],
            "high": [11.0 + d for d in drift],
            "low": [9.0 + d for d in drift],
            "close": [10.5 + d for d in drift],
            "volume": [100.0] * n,
        },
        timeframe=timeframe,
        provider="p",
        job_id="job",
    )


def set_row(df: pl.DataFrame, index: int, **values: Any) -> pl.DataFrame:
    """Return `df` with some columns of one row replaced."""
    row = pl.int_range(pl.len()) == index
    return df.with_columns(
        **{
            name: pl.when(row).then(pl.lit(value, df.schema[name])).otherwise(pl.col(name))
            for name, value in values.items()
        }
    )


def run(df: pl.DataFrame, calendar: TradingCalendar | None) -> ValidationResult:
    return Validator(calendar).validate(df, job_id="job-v")


# -- clean input ---------------------------------------------------------------------------
def test_clean_rows_pass_untouched(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(3, 20)
    result = run(bars, xnys)
    assert_frame_equal(result.clean, bars)
    assert result.rejected.is_empty()
    assert result.exact_duplicates == 0
    assert result.issues == []
    report = result.report
    assert report.job_id == "job-v"
    assert (report.total_records, report.valid_records, report.invalid_records) == (60, 60, 0)
    assert report.quality_score == 1.0
    assert report.rule_counts == {}
    assert report.issue_count == 0


def test_clean_intraday_rows_pass_untouched(xnys: TradingCalendar) -> None:
    bars = intraday(minute_ts(utc(2024, 7, 3, 13, 30), 210))  # the whole early-close session
    result = run(bars, xnys)
    assert_frame_equal(result.clean, bars)
    assert result.report.rule_counts == {}


def test_empty_batch(xnys: TradingCalendar) -> None:
    result = run(pl.DataFrame(schema=BAR_POLARS_SCHEMA), xnys)
    assert result.clean.is_empty() and result.rejected.is_empty()
    assert result.report.total_records == 0
    assert result.report.quality_score == 1.0
    assert result.report.data_profiling == {"rows": 0}


def test_output_schemas(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    result = run(set_row(make_bars(1, 5), 2, volume=-1.0), xnys)
    assert result.clean.schema == BAR_POLARS_SCHEMA
    assert result.rejected.columns == [*BAR_COLUMNS, "rule", "severity", "reason"]
    assert result.rejected.schema["quality_flags"] == pl.UInt32


# -- row rules -----------------------------------------------------------------------------
ERROR_CASES: list[tuple[str, dict[str, Any], QualityFlag]] = [
    ("missing_value", {"open": None}, QualityFlag.MISSING_VALUE),
    ("missing_value", {"close": None}, QualityFlag.MISSING_VALUE),
    ("non_finite", {"close": math.nan}, QualityFlag.NON_FINITE),
    ("non_finite", {"high": math.inf}, QualityFlag.NON_FINITE),
    ("non_finite", {"volume": math.inf}, QualityFlag.NON_FINITE),
    ("non_finite", {"vwap": math.nan}, QualityFlag.NON_FINITE),
    ("non_positive_price", {"low": 0.0}, QualityFlag.NON_POSITIVE_PRICE),
    ("non_positive_price", {"low": -1.0}, QualityFlag.NON_POSITIVE_PRICE),
    ("negative_volume", {"volume": -5.0}, QualityFlag.NEGATIVE_VOLUME),
    ("ohlc_inconsistent", {"high": 1.0, "low": 2.0, "open": 1.5, "close": 1.5},
     QualityFlag.OHLC_INCONSISTENT),
    ("ohlc_inconsistent", {"high": 10.0, "low": 9.0, "open": 10.5, "close": 9.5},
     QualityFlag.OHLC_INCONSISTENT),
    ("ohlc_inconsistent", {"high": 10.0, "low": 9.0, "open": 9.5, "close": 8.5},
     QualityFlag.OHLC_INCONSISTENT),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "changes", "flag"),
    ERROR_CASES,
    ids=[f"{c[0]}-{next(iter(c[1]))}" for c in ERROR_CASES],
)
def test_error_rule_rejects_its_row(
    make_bars: MakeBars,
    xnys: TradingCalendar,
    rule: str,
    changes: dict[str, Any],
    flag: QualityFlag,
) -> None:
    bars = make_bars(1, 6)
    bad = set_row(bars, 3, **changes)
    result = run(bad, xnys)

    assert result.rejected.height == 1
    rejected = result.rejected.row(0, named=True)
    assert rejected["ts"] == bars["ts"][3]
    assert rule in rejected["rule"].split(",")
    assert rejected["severity"] == "error"
    assert RULE_MESSAGES[rule] in rejected["reason"]
    assert rejected["quality_flags"] & flag
    # the other rows are stored as they came
    assert_frame_equal(result.clean, bars.filter(pl.int_range(pl.len()) != 3))
    assert result.report.rule_counts[rule] == 1
    assert result.report.invalid_records == 1
    assert result.report.valid_records == 5
    assert any(i.rule == rule and i.severity is Severity.ERROR for i in result.issues)


def test_each_row_rule_reports_only_its_own_finding(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bars = make_bars(1, 6)
    cases = {
        "missing_value": {"open": None},
        "non_finite": {"vwap": math.nan},
        "non_positive_price": {"low": 0.0},
        "negative_volume": {"volume": -1.0},
    }
    for rule, changes in cases.items():
        rejected = run(set_row(bars, 0, **changes), xnys).rejected
        assert rejected["rule"].to_list() == [rule]


def test_row_breaking_several_rules_lists_them_all(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bad = set_row(make_bars(1, 4), 1, volume=-1.0, low=-2.0)
    result = run(bad, xnys)
    row = result.rejected.row(0, named=True)
    assert set(row["rule"].split(",")) == {"negative_volume", "non_positive_price"}
    assert RULE_MESSAGES["negative_volume"] in row["reason"]
    assert RULE_MESSAGES["non_positive_price"] in row["reason"]
    assert row["quality_flags"] == QualityFlag.NEGATIVE_VOLUME | QualityFlag.NON_POSITIVE_PRICE


def test_ohlc_check_tolerates_float_noise(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(1, 3).with_columns(
        high=pl.max_horizontal("open", "close") * (1 - 1e-12),
        low=pl.min_horizontal("open", "close") * (1 + 1e-12),
    )
    result = run(bars, xnys)
    assert result.rejected.is_empty()
    assert result.clean.height == 3


def test_zero_volume_is_a_warning_kept_and_flagged(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bars = make_bars(1, 6)
    result = run(set_row(bars, 2, volume=0.0), xnys)
    assert result.rejected.is_empty()
    assert result.clean.height == 6
    assert result.clean["quality_flags"].to_list() == [0, 0, int(QualityFlag.ZERO_VOLUME), 0, 0, 0]
    assert result.report.rule_counts == {"zero_volume": 1}
    assert result.report.valid_records == 6
    assert [i.severity for i in result.issues] == [Severity.WARNING]


def test_existing_flags_are_kept(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = set_row(make_bars(1, 3), 0, quality_flags=int(QualityFlag.SINGLE_SOURCE), volume=0.0)
    flags = run(bars, xnys).clean["quality_flags"].to_list()
    assert flags[0] == QualityFlag.SINGLE_SOURCE | QualityFlag.ZERO_VOLUME


def test_null_volume_and_vwap_are_not_errors(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = set_row(make_bars(1, 3), 1, volume=None, vwap=None, trades=None)
    result = run(bars, xnys)
    assert result.rejected.is_empty()
    assert result.clean.height == 3


def test_rules_can_be_narrowed(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    only_volume = tuple(r for r in ROW_RULES if r.name == "negative_volume")
    bad = set_row(set_row(make_bars(1, 4), 1, volume=-1.0), 2, low=-1.0)
    result = Validator(xnys, rules=only_volume).validate(bad, job_id="j")
    assert result.rejected["rule"].to_list() == ["negative_volume"]
    assert result.clean.height == 3


def test_without_error_rules_nothing_is_rejected(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    warnings_only = tuple(r for r in ROW_RULES if r.severity is Severity.WARNING)
    bad = set_row(make_bars(1, 4), 1, volume=-1.0, low=-1.0)
    result = Validator(xnys, rules=warnings_only).validate(bad, job_id="j")
    assert result.rejected.is_empty()
    assert result.clean.height == 4


# -- calendar rules ------------------------------------------------------------------------
def test_daily_bar_off_midnight_is_misaligned(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(1, 4)
    bad = bars.with_columns(
        ts=pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.col("ts") + pl.duration(hours=14, minutes=30))
        .otherwise(pl.col("ts"))
    )
    result = run(bad, xnys)
    assert result.rejected["rule"].to_list() == ["misaligned_ts"]
    assert result.rejected["quality_flags"].to_list() == [int(QualityFlag.MISALIGNED_TS)]
    assert result.report.rule_counts["misaligned_ts"] == 1


def test_daily_bar_on_a_holiday_is_not_a_session(xnys: TradingCalendar) -> None:
    bars = intraday([utc(2024, 7, 3), utc(2024, 7, 4), utc(2024, 7, 5)], timeframe="1d")
    result = run(bars, xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 7, 4)]
    assert result.rejected["rule"].to_list() == ["not_a_session"]
    assert result.rejected["quality_flags"].to_list() == [int(QualityFlag.NOT_A_SESSION)]
    assert result.clean["ts"].to_list() == [utc(2024, 7, 3), utc(2024, 7, 5)]


def test_intraday_bar_off_the_session_grid_is_misaligned(xnys: TradingCalendar) -> None:
    times = [*minute_ts(utc(2024, 1, 2, 14, 30), 5), utc(2024, 1, 2, 14, 35, 30)]
    result = run(intraday(times), xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 1, 2, 14, 35, 30)]
    assert result.rejected["rule"].to_list() == ["misaligned_ts"]


def test_hourly_grid_starts_at_the_open_not_on_the_hour(xnys: TradingCalendar) -> None:
    times = [utc(2024, 1, 2, 14, 30), utc(2024, 1, 2, 15, 30), utc(2024, 1, 2, 15, 0)]
    result = run(intraday(times, "1h"), xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 1, 2, 15, 0)]
    assert result.rejected["rule"].to_list() == ["misaligned_ts"]


def test_five_minute_grid(xnys: TradingCalendar) -> None:
    times = [utc(2024, 1, 2, 14, 35), utc(2024, 1, 2, 14, 40), utc(2024, 1, 2, 14, 41)]
    result = run(intraday(times, "5m"), xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 1, 2, 14, 41)]


def test_intraday_bar_on_a_weekend_is_not_a_session(xnys: TradingCalendar) -> None:
    times = [*minute_ts(utc(2024, 7, 5, 13, 30), 3), utc(2024, 7, 6, 15, 0)]
    result = run(intraday(times), xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 7, 6, 15, 0)]
    assert result.rejected["rule"].to_list() == ["not_a_session"]


@pytest.mark.parametrize(
    "extra",
    [utc(2024, 1, 2, 13, 0), utc(2024, 1, 2, 21, 0), utc(2024, 7, 3, 17, 0)],
    ids=["pre-market", "post-market", "after-early-close"],
)
def test_intraday_bar_outside_regular_hours_is_a_flagged_warning(
    xnys: TradingCalendar, extra: datetime
) -> None:
    times = sorted([*minute_ts(utc(2024, 1, 2, 14, 30), 3), extra])
    result = run(intraday(times), xnys)
    assert result.rejected.is_empty()
    flags = dict(zip(result.clean["ts"].to_list(), result.clean["quality_flags"], strict=True))
    assert flags[extra] == QualityFlag.OUTSIDE_SESSION
    assert sum(1 for f in flags.values() if f) == 1
    assert result.report.rule_counts["outside_session"] == 1


def test_without_a_calendar_session_rules_are_skipped(xnys: TradingCalendar) -> None:
    holiday_daily = intraday([utc(2024, 7, 4), utc(2024, 7, 6), utc(2024, 7, 7, 12)], "1d")
    result = run(holiday_daily, None)
    assert result.rejected["ts"].to_list() == [utc(2024, 7, 7, 12)]
    assert result.rejected["rule"].to_list() == ["misaligned_ts"]

    round_the_clock = intraday(
        [
            utc(2024, 7, 6, 3, 0),
            utc(2024, 7, 6, 3, 1),
            utc(2024, 7, 6, 3, 5),
            utc(2024, 7, 6, 3, 7, 5),
        ]
    )
    result = run(round_the_clock, None)
    assert result.rejected["ts"].to_list() == [utc(2024, 7, 6, 3, 7, 5)]
    assert "missing_bar" not in result.report.rule_counts


def test_weekly_bars_are_checked_for_midnight_only(xnys: TradingCalendar) -> None:
    bars = intraday([utc(2024, 1, 1), utc(2024, 1, 8), utc(2024, 1, 15, 6)], "1w")
    result = run(bars, xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 1, 15, 6)]
    assert result.rejected["rule"].to_list() == ["misaligned_ts"]


def test_mixed_timeframes_in_one_batch(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    daily = make_bars(1, 3)
    minutes = intraday([utc(2024, 1, 2, 14, 30), utc(2024, 1, 2, 14, 31, 1)])
    result = run(pl.concat([daily, minutes]), xnys)
    assert result.rejected["ts"].to_list() == [utc(2024, 1, 2, 14, 31, 1)]
    assert result.clean.height == 4
    assert result.report.data_profiling["timeframes"] == ["1d", "1m"]


# -- duplicates ----------------------------------------------------------------------------
def test_exact_duplicate_is_dropped_and_counted(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(2, 4)
    # the same bar again, even with other bookkeeping, carries no information
    again = bars.slice(2, 1).with_columns(job_id=pl.lit("job-other"))
    result = run(pl.concat([bars, again]), xnys)
    assert_frame_equal(result.clean, bars)
    assert result.rejected.is_empty()
    assert result.exact_duplicates == 1
    report = result.report
    assert report.total_records == 9
    assert report.valid_records == 9
    assert report.invalid_records == 0
    assert report.rule_counts == {"duplicate": 1}
    assert report.issue_count == 1


def test_conflicting_duplicates_are_all_rejected(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bars = make_bars(1, 4)
    other = bars.slice(1, 1).with_columns(close=pl.col("close") * 1.01)
    result = run(pl.concat([bars, other]), xnys)
    assert result.rejected.height == 2
    assert set(result.rejected["rule"]) == {"duplicate_conflict"}
    assert set(result.rejected["ts"]) == {bars["ts"][1]}
    # the late copy also arrived out of order: that soft flag may ride along
    assert all(f & QualityFlag.DUPLICATE_CONFLICT for f in result.rejected["quality_flags"])
    assert result.clean["ts"].to_list() == bars["ts"].gather([0, 2, 3]).to_list()
    assert result.report.rule_counts["duplicate_conflict"] == 2
    assert result.exact_duplicates == 0


def test_conflict_and_exact_duplicate_together(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(1, 3)
    row = bars.slice(0, 1)
    batch = pl.concat([bars, row, row.with_columns(volume=pl.col("volume") + 1)])
    result = run(batch, xnys)
    assert result.exact_duplicates == 1
    assert result.rejected.height == 2
    assert result.clean.height == 2
    assert result.clean.height + result.rejected.height + result.exact_duplicates == batch.height


def test_same_ts_in_other_symbols_or_timeframes_is_no_duplicate(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bars = make_bars(["AAA", "BBB"], 3)
    weekly = bars.filter(pl.col("symbol") == "AAA").head(1).with_columns(timeframe=pl.lit("1w"))
    result = run(pl.concat([bars, weekly]), xnys)
    assert result.rejected.is_empty()
    assert result.exact_duplicates == 0
    assert result.clean.height == 7


# -- missing bars --------------------------------------------------------------------------
def test_gap_inside_a_daily_series_is_a_missing_bar(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bars = make_bars(["AAA", "BBB"], 10)
    gone = bars.filter((pl.col("symbol") == "AAA") & (pl.int_range(pl.len()) == 4))
    result = run(bars.join(gone, on=["symbol", "ts"], how="anti"), xnys)
    assert result.report.rule_counts == {"missing_bar": 1}
    missing = [i for i in result.issues if i.rule == "missing_bar"]
    assert [(i.symbol, i.ts) for i in missing] == [("AAA", gone["ts"][0])]
    assert missing[0].severity is Severity.WARNING
    assert result.clean.height == 19  # a warning about the series, no row is touched


def test_weekends_and_holidays_are_not_gaps(xnys: TradingCalendar) -> None:
    days = [utc(2024, 7, 2), utc(2024, 7, 3), utc(2024, 7, 5), utc(2024, 7, 8)]
    result = run(intraday(days, "1d"), xnys)
    assert "missing_bar" not in result.report.rule_counts
    assert result.report.quality_score == 1.0


def test_only_gaps_inside_each_series_span_count(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    late_listing = make_bars(["NEW"], 3, start="2024-01-10")
    early_delisting = make_bars(["OLD"], 3, start="2024-01-02")
    result = run(pl.concat([late_listing, early_delisting]), xnys)
    assert "missing_bar" not in result.report.rule_counts


def test_gaps_counted_per_symbol(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(["AAA", "BBB"], 10)
    keep = pl.int_range(pl.len()).over("symbol")
    thinned = bars.filter(
        ~((pl.col("symbol") == "AAA") & keep.is_in([2, 3]))
        & ~((pl.col("symbol") == "BBB") & (keep == 7))
    )
    result = run(thinned, xnys)
    assert result.report.rule_counts == {"missing_bar": 3}
    by_symbol = [i.symbol for i in result.issues if i.rule == "missing_bar"]
    assert sorted(by_symbol) == ["AAA", "AAA", "BBB"]


def test_intraday_gap_against_the_session_grid(xnys: TradingCalendar) -> None:
    times = [t for t in minute_ts(utc(2024, 1, 2, 14, 30), 10) if t != utc(2024, 1, 2, 14, 35)]
    result = run(intraday(times), xnys)
    assert result.report.rule_counts == {"missing_bar": 1}
    assert [i.ts for i in result.issues if i.rule == "missing_bar"] == [utc(2024, 1, 2, 14, 35)]


def test_intraday_gap_across_the_overnight_break_counts_only_session_minutes(
    xnys: TradingCalendar,
) -> None:
    # last bar of the 2nd and first bar of the 3rd: nothing is missing overnight
    times = [utc(2024, 1, 2, 20, 59), utc(2024, 1, 3, 14, 30)]
    assert "missing_bar" not in run(intraday(times), xnys).report.rule_counts


def test_intraday_gap_is_found_when_the_batch_has_extended_hours_bars(
    xnys: TradingCalendar,
) -> None:
    # a pre-market bar (kept, flagged outside_session) must not hide a gap in the session
    session = [t for t in minute_ts(utc(2024, 1, 2, 14, 30), 10) if t != utc(2024, 1, 2, 14, 35)]
    result = run(intraday([utc(2024, 1, 2, 14, 0), *session]), xnys)
    assert result.report.rule_counts.get("outside_session") == 1
    assert result.report.rule_counts.get("missing_bar") == 1
    assert [i.ts for i in result.issues if i.rule == "missing_bar"] == [utc(2024, 1, 2, 14, 35)]


def test_a_rejected_bar_is_not_also_reported_missing(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    # the bar arrived (and went to quarantine): "none arrived" would be false, and the row
    # would weigh twice in the score, depending only on where in the series it sits
    bars = make_bars(1, 10)
    middle = run(set_row(bars, 5, volume=-1.0), xnys).report
    edge = run(set_row(bars, 0, volume=-1.0), xnys).report
    assert "missing_bar" not in middle.rule_counts
    assert middle.quality_score == pytest.approx(0.9)
    assert middle.quality_score == pytest.approx(edge.quality_score)


# -- the score -----------------------------------------------------------------------------
def test_quality_score_formula(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(1, 12)
    batch = set_row(set_row(bars, 0, volume=-1.0), 9, volume=0.0)  # 1 error, 1 warning
    batch = batch.filter(pl.int_range(pl.len()) != 6)  # 1 gap
    report = run(batch, xnys).report
    total, clean, soft, missing = 11, 10, 1, 1
    assert (report.total_records, report.valid_records, report.invalid_records) == (11, 10, 1)
    assert report.rule_counts == {"negative_volume": 1, "zero_volume": 1, "missing_bar": 1}
    assert report.issue_count == 3
    assert report.quality_score == pytest.approx((clean - 0.5 * soft) / (total + missing))


def test_quality_score_is_zero_when_everything_is_rejected(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bad = make_bars(1, 5).with_columns(volume=pl.lit(-1.0))
    report = run(bad, xnys).report
    assert report.quality_score == 0.0
    assert report.valid_records == 0
    assert report.invalid_records == 5


def test_warnings_only_halve_a_row(make_bars: MakeBars, xnys: TradingCalendar) -> None:
    bars = make_bars(1, 4).with_columns(volume=pl.lit(0.0))
    assert run(bars, xnys).report.quality_score == pytest.approx(0.5)


def test_issue_list_is_capped_per_rule_but_counts_are_not(
    make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    bars = make_bars(1, 120).with_columns(volume=pl.lit(-1.0))
    result = run(bars, xnys)
    assert result.report.rule_counts["negative_volume"] == 120
    assert len([i for i in result.issues if i.rule == "negative_volume"]) == 50
    assert result.report.issue_count == 120


# -- profile -------------------------------------------------------------------------------
def test_profile_summarises_the_batch(make_bars: MakeBars) -> None:
    bars = set_row(make_bars(2, 5), 0, vwap=None, close=math.nan)
    prof = profile(bars)
    assert prof["rows"] == 10
    assert prof["symbols"] == 2
    assert prof["timeframes"] == ["1d"]
    assert prof["first_ts"] == "2024-01-02T00:00:00+00:00"
    assert prof["last_ts"] == "2024-01-08T00:00:00+00:00"
    assert prof["columns"]["vwap"]["nulls"] == 1
    assert prof["columns"]["volume"]["min"] == bars["volume"].min()
    assert prof["columns"]["close"]["nulls"] == 0


# -- property: nothing is lost -------------------------------------------------------------
def _base_rows() -> list[dict[str, Any]]:
    """Return 3 symbols x 8 sessions of well-formed daily bars as row dicts."""
    days = get_calendar("XNYS").sessions("2024-01-02", "2024-01-11").to_list()
    rows = []
    for k, symbol in enumerate(["AAA", "BBB", "CCC"]):
        for i, day in enumerate(days):
            price = 50.0 + 10 * k + i
            rows.append(
                {
                    "symbol": symbol, "timeframe": "1d", "ts": utc(day.year, day.month, day.day),
                    "open": price, "high": price + 2, "low": price - 2, "close": price + 1,
                    "volume": 1000.0 + i, "vwap": price, "trades": 10, "provider": "p",
                    "quality_flags": 0, "ingested_at": None, "job_id": "job",
                }
            )  # fmt: skip
    return rows


_BASE_ROWS = _base_rows()
_CORRUPTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "nan": lambda r: {**r, "close": math.nan},
    "inf_volume": lambda r: {**r, "volume": math.inf},
    "null_open": lambda r: {**r, "open": None},
    "negative_volume": lambda r: {**r, "volume": -abs(r["volume"]) - 1},
    "high_below_low": lambda r: {**r, "high": r["low"] * 0.5},
    "zero_price": lambda r: {**r, "low": 0.0},
    "zero_volume": lambda r: {**r, "volume": 0.0},
    "misaligned": lambda r: {**r, "ts": r["ts"] + timedelta(hours=3)},
    "holiday": lambda r: {**r, "ts": utc(2024, 1, 15)},  # Martin Luther King Jr. Day
}


@st.composite
def damaged_batches(draw: st.DrawFn) -> pl.DataFrame:
    rows = _BASE_ROWS
    out: list[dict[str, Any]] = []
    for row in rows:
        if draw(st.booleans()):
            continue  # leave gaps
        kind = draw(st.sampled_from([None, None, *sorted(_CORRUPTIONS)]))
        new = _CORRUPTIONS[kind](row) if kind else row
        out.append(new)
        repeat = draw(st.sampled_from([None, None, None, "exact", "conflict"]))
        if repeat == "exact":
            out.append({**new, "job_id": "again"})
        elif repeat == "conflict":
            out.append({**new, "open": (new["open"] or 1.0) * 1.5, "high": None})
    order = draw(st.permutations(range(len(out))))
    return pl.DataFrame([out[i] for i in order], schema=BAR_POLARS_SCHEMA)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_batches())
def test_validator_never_loses_a_row(batch: pl.DataFrame) -> None:
    result = Validator(get_calendar("XNYS")).validate(batch, job_id="prop")
    clean, rejected = result.clean, result.rejected
    assert clean.height + rejected.height + result.exact_duplicates == batch.height
    report = result.report
    assert report.total_records == batch.height
    assert report.valid_records + report.invalid_records == batch.height
    assert report.invalid_records == rejected.height
    assert 0.0 <= report.quality_score <= 1.0
    # every rejected row says why; no stored row carries an error flag or a repeated key
    assert rejected["rule"].null_count() == 0
    assert (rejected["rule"].str.len_chars() > 0).all()
    assert (rejected["quality_flags"] & ERROR_BITS != 0).all()
    assert (clean["quality_flags"] & ERROR_BITS == 0).all()
    assert clean.select(pl.struct("symbol", "timeframe", "ts").is_unique().all()).item()
    # every input row is accounted for by its key in clean or rejected
    keys = ["symbol", "timeframe", "ts"]
    seen = pl.concat([clean.select(keys), rejected.select(keys)])
    assert batch.select(keys).join(seen, on=keys, how="anti").is_empty()
