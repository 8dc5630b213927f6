"""The SQLite catalog: jobs, quality reports and dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from quantivista.errors import NotFoundError, StorageError
from quantivista.model.jobs import (
    DataQualityReport,
    IngestionJob,
    JobStatus,
    Severity,
    ValidationIssue,
)
from quantivista.storage.lake.catalog import SqliteCatalog

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqliteCatalog]:
    cat = SqliteCatalog(tmp_path / "meta" / "catalog.sqlite")
    yield cat
    cat.close()


def job(job_id: str, start: datetime | None = T0, **kw: object) -> IngestionJob:
    return IngestionJob(job_id=job_id, source_id="synthetic", start_time=start, **kw)


def report(job_id: str, score: float = 0.9) -> DataQualityReport:
    return DataQualityReport(
        job_id=job_id,
        total_records=10,
        valid_records=9,
        invalid_records=1,
        quality_score=score,
        validation_errors=[
            ValidationIssue(
                symbol="AAA", ts=T0, rule="negative_volume", severity=Severity.ERROR, message="m"
            )
        ],
        rule_counts={"negative_volume": 1},
        issue_count=1,
    )


def test_creates_its_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "catalog.sqlite"
    SqliteCatalog(path).close()
    assert path.is_file()


def test_job_round_trip(catalog: SqliteCatalog) -> None:
    saved = job(
        "job-1",
        symbols=["AAA", "BBB"],
        timeframe="1d",
        status=JobStatus.SUCCEEDED,
        end_time=T0 + timedelta(seconds=3),
        quality=report("job-1"),
        error_details=[{"symbol": "BBB", "error": "timeout"}],
    )
    catalog.save_job(saved)
    assert catalog.job("job-1") == saved


def test_saving_a_job_again_updates_it(catalog: SqliteCatalog) -> None:
    catalog.save_job(job("job-1", status=JobStatus.RUNNING))
    catalog.save_job(
        job("job-1", status=JobStatus.PARTIAL, records_processed=5, end_time=T0 + timedelta(1))
    )
    loaded = catalog.job("job-1")
    assert loaded.status is JobStatus.PARTIAL
    assert loaded.records_processed == 5
    assert len(catalog.jobs()) == 1


def test_unknown_job_raises_not_found(catalog: SqliteCatalog) -> None:
    with pytest.raises(NotFoundError, match="unknown job") as info:
        catalog.job("nope")
    assert info.value.context["job_id"] == "nope"


def test_jobs_newest_first_with_a_limit(catalog: SqliteCatalog) -> None:
    for i in (2, 0, 3, 1):
        catalog.save_job(job(f"job-{i}", start=T0 + timedelta(minutes=i)))
    assert [j.job_id for j in catalog.jobs()] == ["job-3", "job-2", "job-1", "job-0"]
    assert [j.job_id for j in catalog.jobs(limit=2)] == ["job-3", "job-2"]


def test_jobs_with_the_same_start_are_newest_saved_first(catalog: SqliteCatalog) -> None:
    for name in ("a", "b", "c"):
        catalog.save_job(job(name))
    assert [j.job_id for j in catalog.jobs()] == ["c", "b", "a"]


def test_reports_per_job_newest_first(catalog: SqliteCatalog) -> None:
    catalog.save_report(report("job-1", 0.5), created_at=T0)
    catalog.save_report(report("job-2", 0.7), created_at=T0)
    catalog.save_report(report("job-1", 0.9), created_at=T0 + timedelta(1))
    assert [r.quality_score for r in catalog.reports("job-1")] == [0.9, 0.5]
    assert [r.quality_score for r in catalog.reports()] == [0.9, 0.7, 0.5]
    assert [r.quality_score for r in catalog.reports(limit=1)] == [0.9]
    assert catalog.reports("job-3") == []
    assert catalog.reports("job-1")[0] == report("job-1", 0.9)


def test_dead_letters_round_trip_newest_first(catalog: SqliteCatalog) -> None:
    first = catalog.add_dead_letter(
        "bars.ingested", {"job_id": "j", "when": T0}, "ValueError: boom", "consumer.a", T0
    )
    second = catalog.add_dead_letter("bars.quarantined", {"rows": 3}, "KeyError: x", None, T0)
    assert second > first > 0
    letters = catalog.dead_letters()
    assert [d["id"] for d in letters] == [second, first]
    old = letters[1]
    assert old["topic"] == "bars.ingested"
    assert old["payload"] == {"job_id": "j", "when": str(T0)}  # non-JSON values as text
    assert old["error"] == "ValueError: boom"
    assert old["handler"] == "consumer.a"
    assert old["created_at"] == T0.isoformat()
    assert letters[0]["handler"] is None
    assert len(catalog.dead_letters(limit=1)) == 1


def test_catalog_persists_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    first = SqliteCatalog(path)
    first.save_job(job("job-1"))
    first.save_report(report("job-1"), created_at=T0)
    first.close()
    second = SqliteCatalog(path)
    try:
        assert second.job("job-1").job_id == "job-1"
        assert len(second.reports("job-1")) == 1
    finally:
        second.close()


def test_concurrent_writers_from_threads(catalog: SqliteCatalog) -> None:
    def work(i: int) -> None:
        catalog.save_job(job(f"job-{i:03d}", start=T0 + timedelta(seconds=i)))
        catalog.save_report(report(f"job-{i:03d}"), created_at=T0)
        catalog.add_dead_letter("t", {"i": i}, "e", None, T0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(40)))
    assert len(catalog.jobs(limit=100)) == 40
    assert len(catalog.reports(limit=100)) == 40
    assert sorted(d["payload"]["i"] for d in catalog.dead_letters(limit=100)) == list(range(40))


def test_use_after_close_is_a_storage_error(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.sqlite")
    cat.close()
    with pytest.raises(StorageError, match="catalog operation failed") as info:
        cat.jobs()
    assert info.value.context["path"].endswith("c.sqlite")
