"""Declarative quality checks: which rows fail, the reasons, the report and the profile."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.errors import RuleValidationError
from quantivista.model.workflow import (
    CheckType,
    QualityCheck,
    RuleType,
    Severity,
    TransformationRule,
)
from quantivista.reporting.checks import (
    judge,
    plan_checks,
    profile,
    repeated,
    run_checks,
    validate_checks,
)
from quantivista.reporting.transform import Reference, collect, plan_rules, rule_rejects

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
FRAME = pl.DataFrame(
    {
        "trade_id": ["t1", "t2", "t2", "t4", None],
        "symbol": ["AAPL", "MSFT", "AAPL", "NOPE", "AAPL"],
        "qty": [100.0, -5.0, 20.0, 10.0, 1.0],
        "side": ["BUY", "SELL", "HOLD", "BUY", "SELL"],
        "at": [datetime(2026, 12, 4, 11, 0, tzinfo=UTC)] * 5,
    }
)
REF = Reference(tables={"instruments": pl.DataFrame({"symbol": ["AAPL", "MSFT"]})})


def check(
    kind: str, field: str | None = None, severity: str = "error", **params: Any
) -> QualityCheck:
    return QualityCheck(
        check_id=f"c-{kind}", check_type=CheckType(kind), field=field, params=params,
        severity=Severity(severity),
    )  # fmt: skip


def test_each_check_type_flags_its_rows_and_dead_letters_name_every_failed_check() -> None:
    result = run_checks(
        FRAME,
        [
            check("not_null", "trade_id"),
            check("unique", "trade_id"),
            check("range", "qty", min=0),
            check("regex", "symbol", pattern="^[A-Z]{1,5}$"),
            check("allowed_values", "side", values=["BUY", "SELL"]),
            check("referential", "symbol", table="instruments", column="symbol"),
            check("custom_sql", condition="qty < 1000"),
        ],
        job_id="j1",
        now=NOW,
        reference=REF,
    )
    assert result.valid["trade_id"].to_list() == ["t1"]
    ids = sorted(json.loads(r)["trade_id"] or "" for r in result.rejected["record"])
    assert ids == ["", "t2", "t2", "t4"]
    assert sorted(result.rejected["reason"].to_list()) == sorted(
        [
            "failed checks: c-range",
            "failed checks: c-unique,c-allowed_values",
            "failed checks: c-referential",
            "failed checks: c-not_null",
        ]
    )
    report = result.report
    assert (report.total_records, report.valid_records, report.invalid_records) == (5, 1, 4)
    assert report.quality_score == pytest.approx(0.2)
    by_check = {e.check_id: e.failed_records for e in report.validation_errors}
    assert by_check == {
        "c-not_null": 1, "c-unique": 1, "c-range": 1, "c-allowed_values": 1, "c-referential": 1,
    }  # fmt: skip
    assert report.data_profiling.columns["qty"].min == -5.0
    assert report.data_profiling.columns["trade_id"].null_count == 1


def test_warnings_count_without_rejecting_and_freshness_judges_the_batch() -> None:
    result = run_checks(
        FRAME,
        [check("range", "qty", "warning", max=50), check("freshness", "at", max_age_s=600)],
        job_id="j2",
        now=NOW,
    )
    assert result.valid.height == 5 and result.rejected.is_empty()
    found = {e.check_id: e for e in result.report.validation_errors}
    assert found["c-range"].failed_records == 1
    assert "older than" in found["c-freshness"].message
    fresh = run_checks(FRAME, [check("freshness", "at", max_age_s=7200)], job_id="j", now=NOW)
    assert fresh.report.validation_errors == []


def test_upstream_rejections_count_as_invalid_records() -> None:
    result = run_checks(FRAME, [], job_id="j", now=NOW, prior_invalid=5)
    assert (result.report.total_records, result.report.invalid_records) == (10, 5)
    assert result.report.quality_score == 0.5


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (check("range", "qty"), "needs min, max or both"),
        (check("regex", "symbol", pattern="(["), "bad regular expression"),
        (check("not_null", "nope"), "unknown field 'nope'"),
        (check("custom_sql", condition="qty >>> ("), "not a Polars SQL condition"),
        (check("referential", "symbol", table="funds", column="id"), "unknown reference"),
        (check("allowed_values", "side", values="BUY"), "values must be a list"),
    ],
)
def test_invalid_checks_are_refused_with_the_reason(bad: QualityCheck, reason: str) -> None:
    with pytest.raises(RuleValidationError) as caught:
        validate_checks([bad], FRAME.schema, REF)
    assert reason in caught.value.context["reason"]
    assert caught.value.context["rule_id"] == bad.check_id


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), max_size=40),
    st.floats(-10, 10),
)
def test_valid_plus_rejected_is_every_row_and_valid_rows_pass(
    values: list[float | None], low: float
) -> None:
    frame = pl.DataFrame({"v": values}, schema={"v": pl.Float64})
    result = run_checks(
        frame, [check("not_null", "v"), check("range", "v", min=low)], job_id="j", now=NOW
    )
    assert result.valid.height + result.rejected.height == frame.height
    assert result.valid["v"].null_count() == 0
    assert (result.valid["v"] >= low).all()
    assert profile(frame).columns["v"].null_count == values.count(None)


def test_a_row_rules_rejected_fails_no_check_and_does_not_claim_a_unique_value() -> None:
    frame = pl.DataFrame({"trade_id": ["t1", "t1", "t2"], "px": ["bad", "1.5", "2.0"]})
    cast = TransformationRule(
        rule_id="px", rule_type=RuleType.CAST, source_field="px", transformation_logic="float64"
    )
    rules = plan_rules(frame.lazy(), [cast])
    checks = plan_checks(rules.frame, [check("unique", "trade_id"), check("range", "px", min=2)])
    done = collect(checks.frame)
    assert rule_rejects(done, rules)["reason"].to_list() == ["px: value cannot be cast"]
    valid, rejected, report = judge(done, checks, job_id="j", now=NOW, prior_invalid=1)
    # the second t1 is the first alive one: kept by unique, rejected by range only
    assert rejected["reason"].to_list() == ["failed checks: c-range"]
    assert done.filter(valid)["trade_id"].to_list() == ["t2"]
    assert (report.total_records, report.valid_records, report.invalid_records) == (3, 1, 2)
    assert report.data_profiling.row_count == 2


def test_a_sampled_profile_keeps_exact_row_and_null_counts() -> None:
    frame = pl.DataFrame({"v": [None, 1.0, None, 3.0, 4.0, None, 6.0, 7.0]})
    plan = plan_checks(frame.lazy(), [check("range", "v", "warning", min=0)])
    _, _, report = judge(collect(plan.frame), plan, job_id="j", now=NOW, sample=3)
    found = report.data_profiling
    assert found.row_count == 8 and found.columns["v"].null_count == 3
    assert found.sampled_rows is not None and found.sampled_rows < 8
    whole = judge(collect(plan.frame), plan, job_id="j", now=NOW, sample=None)[2]
    assert whole.data_profiling.sampled_rows is None
    assert whole.data_profiling.columns["v"].max == 7.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(0, 6)), max_size=40),
    st.sampled_from([pl.String, pl.Int64, pl.Float64, pl.Date]),
    st.integers(1, 3),
)
def test_repeated_values_are_those_is_first_distinct_finds(
    values: list[int | None], dtype: Any, chunks: int
) -> None:
    # the sorted-hash path (strings, integers, dates) and the plain one (floats) agree with
    # Polars' own definition, on a series of several chunks too
    series = pl.Series("v", values, dtype=pl.Int64)
    if dtype == pl.String:
        series = series.cast(pl.String)
    elif dtype == pl.Date:
        series = series.cast(pl.Date)
    elif dtype == pl.Float64:
        series = series.cast(pl.Float64) * 0.5
    step = -(-len(values) // chunks) or 1
    cut = [series.slice(i, step) for i in range(0, len(values), step)]
    pieces = pl.concat(cut, rechunk=False) if cut else series
    expected = series.is_not_null() & ~series.is_first_distinct()
    assert repeated(pieces).to_list() == expected.to_list()
