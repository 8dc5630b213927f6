"""Ingestion jobs and their data-quality reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "DataQualityReport",
    "IngestionJob",
    "JobStatus",
    "JobTask",
    "Severity",
    "TaskStatus",
    "ValidationIssue",
]


class JobStatus(StrEnum):
    """Lifecycle of an ingestion job."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # finished, but some symbols or rows failed
    FAILED = "failed"


class Severity(StrEnum):
    """How bad a rule finding is: errors are quarantined, warnings stay flagged on the row."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class ValidationIssue(BaseModel):
    """One finding of a validation rule, on a row (symbol, ts) or on a whole series."""

    model_config = ConfigDict(frozen=True)

    symbol: str | None = None
    ts: datetime | None = None
    rule: str
    severity: Severity
    message: str


class DataQualityReport(BaseModel):
    """What validation found in one batch or job."""

    job_id: str
    total_records: int = Field(ge=0)
    valid_records: int = Field(ge=0)
    invalid_records: int = Field(ge=0)
    quality_score: float = Field(ge=0.0, le=1.0)
    validation_errors: list[ValidationIssue] = Field(default_factory=list)
    rule_counts: dict[str, int] = Field(default_factory=dict)
    issue_count: int = Field(default=0, ge=0, description="issues found; the list may be capped")
    data_profiling: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def merge(
        cls, job_id: str, reports: list[DataQualityReport], max_issues: int = 1000
    ) -> DataQualityReport:
        """Combine batch reports into one job report (counts add, score is row-weighted)."""
        total = sum(r.total_records for r in reports)
        valid = sum(r.valid_records for r in reports)
        counts: dict[str, int] = {}
        for report in reports:
            for rule, n in report.rule_counts.items():
                counts[rule] = counts.get(rule, 0) + n
        # row-weighted; batches without rows carry no evidence against the data
        score = sum(r.quality_score * r.total_records for r in reports) / total if total else 1.0
        issues = [i for r in reports for i in r.validation_errors][:max_issues]
        profile: dict[str, Any] = {"batches": len(reports)}
        if reports:
            profile["last_batch"] = reports[-1].data_profiling
        return cls(
            job_id=job_id,
            total_records=total,
            valid_records=valid,
            invalid_records=total - valid,
            quality_score=min(1.0, max(0.0, score)),
            validation_errors=issues,
            rule_counts=counts,
            issue_count=sum(r.issue_count for r in reports),
            data_profiling=profile,
        )


class IngestionJob(BaseModel):
    """One run that pulled data from sources into the store."""

    job_id: str
    source_id: str
    status: JobStatus = JobStatus.PENDING
    records_processed: int = 0
    records_failed: int = 0
    start_time: AwareDatetime | None = None
    end_time: AwareDatetime | None = None
    error_details: list[dict[str, Any]] = Field(default_factory=list)
    symbols: list[str] = Field(default_factory=list)
    timeframe: str | None = None
    request_start: AwareDatetime | None = None
    request_end: AwareDatetime | None = None
    quality: DataQualityReport | None = None
    providers: list[str] = Field(default_factory=list, description="tried in this order")
    tenant: str | None = Field(
        default=None, description="the API tenant that submitted it (None: the platform's own)"
    )
    tasks: int = Field(default=0, ge=0, description="units of work the job was split into")
    queue: str | None = Field(
        default=None,
        description="run by `qv worker`s of this queue (None: by the process that submitted"
        " it); a queued job's lapsed lease puts the task back for another worker",
    )
    max_attempts: int = Field(
        default=0, ge=0, description="claims of one task before it fails (0: no limit)"
    )
    kind: str = Field(
        default="ingest",
        description="what its tasks do: ingest (fetch, validate, store) or another kind a"
        " service registered with the ingestion service, e.g. export (write a file of bars)",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's own parameters")

    @property
    def duration_s(self) -> float | None:
        """Return the wall time of the job in seconds once it has ended."""
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()


class TaskStatus(StrEnum):
    """Lifecycle of one unit of a job."""

    PENDING = "pending"  # waiting for a worker (new, or its last worker's lease lapsed)
    RUNNING = "running"  # leased by a worker that heartbeats
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # gave up (a permanent error); recovery may run it again


class JobTask(BaseModel):
    """A unit of an ingestion job: some symbols of the job's range, run under a lease.

    A running task belongs to `worker` until `lease_expires_at`; the worker extends the
    lease by heartbeats. A lapsed lease means the worker died: the task goes back to
    pending and its job to failed ("lease expired") until it is recovered.
    """

    task_id: str
    job_id: str
    seq: int = Field(ge=0)
    symbols: list[str]
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = Field(default=0, ge=0, description="claims so far")
    worker: str | None = None
    lease_expires_at: AwareDatetime | None = None
    heartbeat_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    records_processed: int = Field(default=0, ge=0)
    records_failed: int = Field(default=0, ge=0)
    symbols_failed: int = Field(
        default=0, ge=0, description="symbols without bars: every provider failed, or none had any"
    )
    error_details: list[dict[str, Any]] = Field(default_factory=list)
    quality: DataQualityReport | None = None

    # the lease transitions every job catalog applies (lake and PostgreSQL alike)
    def claimed(self, worker: str, now: datetime, lease_s: float) -> JobTask:
        """This task running under `worker`'s new lease (one more attempt)."""
        return self.model_copy(
            update={
                "status": TaskStatus.RUNNING,
                "worker": worker,
                "attempts": self.attempts + 1,
                "lease_expires_at": now + timedelta(seconds=lease_s),
                "heartbeat_at": now,
                "started_at": now,
                "finished_at": None,
            }
        )

    def renewed(self, now: datetime, lease_s: float) -> JobTask:
        """This task with its lease extended by a heartbeat at `now`."""
        return self.model_copy(
            update={"lease_expires_at": now + timedelta(seconds=lease_s), "heartbeat_at": now}
        )

    def finished(self, worker: str, now: datetime) -> JobTask:
        """This task's outcome as stored by `worker` at `now` (lease released)."""
        return self.model_copy(
            update={"worker": worker, "finished_at": now, "lease_expires_at": None}
        )

    def reset(self) -> JobTask:
        """This task back to pending, with no lease and no worker (recovery)."""
        return self.model_copy(
            update={"status": TaskStatus.PENDING, "lease_expires_at": None, "worker": None}
        )
