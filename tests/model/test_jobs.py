"""Jobs and quality reports: merging batch reports into a job report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from quantivista.model.jobs import (
    DataQualityReport,
    IngestionJob,
    JobStatus,
    Severity,
    ValidationIssue,
)


def issue(rule: str, n: int = 0) -> ValidationIssue:
    return ValidationIssue(
        symbol=f"S{n}", ts=None, rule=rule, severity=Severity.ERROR, message=rule
    )


def report(
    total: int, valid: int, score: float, counts: dict[str, int], issues: int = 0
) -> DataQualityReport:
    return DataQualityReport(
        job_id="batch",
        total_records=total,
        valid_records=valid,
        invalid_records=total - valid,
        quality_score=score,
        validation_errors=[issue("r", i) for i in range(issues)],
        rule_counts=counts,
        issue_count=sum(counts.values()),
        data_profiling={"rows": total},
    )


def test_merge_sums_counts_and_weights_the_score_by_rows() -> None:
    a = report(100, 90, 0.9, {"ohlc_inconsistent": 10}, issues=2)
    b = report(300, 300, 1.0, {"zero_volume": 4, "ohlc_inconsistent": 1}, issues=3)
    merged = DataQualityReport.merge("job-1", [a, b])
    assert merged.job_id == "job-1"
    assert merged.total_records == 400
    assert merged.valid_records == 390
    assert merged.invalid_records == 10
    assert merged.quality_score == pytest.approx((100 * 0.9 + 300 * 1.0) / 400)
    assert merged.rule_counts == {"ohlc_inconsistent": 11, "zero_volume": 4}
    assert merged.issue_count == 15
    assert len(merged.validation_errors) == 5
    assert merged.data_profiling == {"batches": 2, "last_batch": {"rows": 300}}


def test_merge_of_nothing_is_a_perfect_empty_report() -> None:
    merged = DataQualityReport.merge("job-0", [])
    assert (merged.total_records, merged.valid_records, merged.invalid_records) == (0, 0, 0)
    assert merged.quality_score == 1.0
    assert merged.rule_counts == {}
    assert merged.data_profiling == {"batches": 0}


def test_merge_of_empty_batches_keeps_their_perfect_score() -> None:
    # the validator scores an empty batch 1.0 (nothing wrong in it); merging such batches,
    # e.g. a job over a range with no sessions, must not turn that into 0.0
    merged = DataQualityReport.merge("job", [report(0, 0, 1.0, {}), report(0, 0, 1.0, {})])
    assert merged.total_records == 0
    assert merged.quality_score == 1.0


def test_merge_caps_the_issue_list_but_not_the_issue_count() -> None:
    batches = [report(10, 5, 0.5, {"r": 5}, issues=5) for _ in range(4)]
    merged = DataQualityReport.merge("job", batches, max_issues=7)
    assert len(merged.validation_errors) == 7
    assert merged.issue_count == 20


def test_merge_keeps_issues_in_batch_order() -> None:
    a = report(1, 0, 0.0, {"r": 1}, issues=1)
    b = report(1, 0, 0.0, {"r": 1}, issues=2)
    merged = DataQualityReport.merge("job", [a, b])
    assert [i.symbol for i in merged.validation_errors] == ["S0", "S0", "S1"]


def test_merge_of_one_report_keeps_its_score() -> None:
    merged = DataQualityReport.merge("job", [report(7, 6, 0.8125, {"r": 1})])
    assert merged.quality_score == pytest.approx(0.8125)


def test_report_bounds_are_validated() -> None:
    with pytest.raises(ValidationError):
        report(10, 5, 1.5, {})
    with pytest.raises(ValidationError):
        DataQualityReport(
            job_id="j", total_records=-1, valid_records=0, invalid_records=0, quality_score=1.0
        )


def test_report_round_trips_through_json() -> None:
    r = report(10, 9, 0.9, {"r": 1}, issues=1)
    assert DataQualityReport.model_validate_json(r.model_dump_json()) == r


def test_job_duration() -> None:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    job = IngestionJob(job_id="j", source_id="synthetic", start_time=start)
    assert job.status is JobStatus.PENDING
    assert job.duration_s is None
    ended = job.model_copy(update={"end_time": start + timedelta(seconds=12.5)})
    assert ended.duration_s == 12.5


def test_job_times_must_be_aware() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        IngestionJob(job_id="j", source_id="s", start_time=datetime(2024, 1, 2))


def test_job_round_trips_through_json_with_its_quality_report() -> None:
    job = IngestionJob(
        job_id="j",
        source_id="s",
        status=JobStatus.PARTIAL,
        symbols=["A", "B"],
        start_time=datetime(2024, 1, 2, tzinfo=UTC),
        quality=report(3, 2, 0.5, {"r": 1}, issues=1),
        error_details=[{"symbol": "B", "error": "boom"}],
    )
    back = IngestionJob.model_validate_json(job.model_dump_json())
    assert back == job
    assert back.quality is not None and back.quality.rule_counts == {"r": 1}


def test_status_and_severity_values() -> None:
    assert [s.value for s in JobStatus] == ["pending", "running", "succeeded", "partial", "failed"]
    assert [s.value for s in Severity] == ["error", "warning", "info"]
