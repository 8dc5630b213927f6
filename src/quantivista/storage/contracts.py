"""One storage contract per kind of state; every backend implements all of them.

| contract | what it keeps | lake (embedded) | PostgreSQL |
|---|---|---|---|
| `BarStore` | silver bars with knowledge-time history | bucketed Parquet | partitioned tables |
| `ActionStore` | corporate actions | one Parquet file | `actions` |
| `QuarantineStore` | rejected rows, their release records | Parquet per batch | `quarantine` |
| `ScoreStore` | quality score per symbol-day and job | Parquet per batch | `quality_scores` |
| `RawStore` | bronze payloads, content-addressed | files + manifest | `raw_payloads` |
| `InstrumentStore` | instruments and ticker history | two Parquet files | two tables |
| `JobCatalog` | jobs, tasks with leases, reports, dead letters, small state | SQLite | tables |
| `ClientStore` | API clients (secret hashes) and tenants' entitlements | SQLite | tables |
| `WorkflowCatalog` | reporting-side sources, rules, jobs, dead letters | SQLite | tables (RLS) |

Rules every backend keeps (the contract suites in `tests/storage/` check them):

- writes are idempotent: writing the same rows twice stores them once;
- a read-modify-write (actions, instruments, task claims) is atomic against other
  processes on the same store: two writers never lose each other's rows;
- `version()` changes whenever the stored data changes (in any process), so readers can
  key caches by it.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import polars as pl

from quantivista.errors import NotFoundError
from quantivista.model.auth import ApiClient, Tenant
from quantivista.model.jobs import DataQualityReport, IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.model.payloads import RawPayload
from quantivista.model.workflow import DataQualityReport as WorkflowReport
from quantivista.model.workflow import DataSource, TransformationRule
from quantivista.model.workflow import IngestionJob as WorkflowJob
from quantivista.storage.base import BarStore

__all__ = [
    "ActionStore",
    "Backend",
    "BarStore",
    "check_digest",
    "manifest_row",
    "ClientStore",
    "DeadLetter",
    "InstrumentStore",
    "JobCatalog",
    "QuarantineStore",
    "RawStore",
    "ScoreStore",
    "WorkflowCatalog",
]


class DeadLetter(dict[str, Any]):
    """A message that a consumer failed to handle, kept for inspection and replay.

    Keys: id, topic, payload (dict), error, handler, created_at (ISO text).
    """


class ActionStore(Protocol):
    """Corporate actions keyed by (symbol, action_type, ex_date, provider)."""

    def all(self) -> pl.DataFrame:
        """Return every stored action (canonical action schema)."""
        ...

    def upsert(self, actions: pl.DataFrame) -> pl.DataFrame:
        """Insert new actions, replace changed ones; return the rows that were new or changed."""
        ...

    def for_symbols(self, symbols: Sequence[str] | None) -> pl.DataFrame:
        """Return actions naming some symbols (as symbol or new_symbol; None: all) by ex-date."""
        ...

    def version(self) -> Hashable:
        """Return a token that changes whenever the stored actions change."""
        ...


class QuarantineStore(Protocol):
    """Rejected bars with their rule, severity and reason; never rewritten, never dropped."""

    def add(self, rejected: pl.DataFrame, *, job_id: str, at: datetime, dedupe: bool = True) -> int:
        """Store rejected rows (canonical columns plus rule, severity, reason); return the count.

        A row equal to a held row in `QUARANTINE_SAME` (the same bad bar, rejected again by
        a re-ingest) is not stored twice, unless `dedupe` is False (a quarantine release
        re-checks rows that are still held until it marks them released).
        """
        ...

    def list(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        rule: str | None = None,
        *,
        include_released: bool = False,
    ) -> pl.DataFrame:
        """Return held rows (sorted by quarantined_at, symbol, ts), optionally filtered.

        With `include_released`, released rows too, with `released_at` and `release_job_id`.
        """
        ...

    def releases(self) -> pl.DataFrame:
        """Return every release record (`RELEASE_SCHEMA`)."""
        ...

    def mark_released(self, rows: pl.DataFrame, *, release_job_id: str, at: datetime) -> int:
        """Record that `rows` (quarantine rows) went back through the write path."""
        ...

    def count(self) -> int:
        """Return how many rows are held (released rows not counted)."""
        ...


class ScoreStore(Protocol):
    """Quality scores per (symbol, timeframe, session date, job)."""

    def add(self, scores: pl.DataFrame, at: datetime) -> int:
        """Store the scores of one validated batch (`SCORE_SCHEMA`); return the rows stored."""
        ...

    def read(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: str | None = None,
    ) -> pl.DataFrame:
        """Return stored scores with `scored_at`, sorted by symbol, timeframe, date, scored_at."""
        ...

    def daily(
        self, symbols: Sequence[str] | None = None, timeframe: str | None = None
    ) -> pl.DataFrame:
        """Return one score per (symbol, timeframe, date): the latest job's."""
        ...

    def close(self) -> None:
        """Let background work (the lake's score compaction) finish."""
        ...


class RawStore(Protocol):
    """Bronze: provider payloads exactly as received, stored once by content."""

    def save(self, job_id: str, payloads: Sequence[RawPayload]) -> int:
        """Store the payloads of a job; return how many new bodies were written."""
        ...

    def manifest(self, job_id: str | None = None) -> pl.DataFrame:
        """Return one row per saved payload (of one job, or all)."""
        ...

    def body(self, sha256: str, provider: str) -> bytes:
        """Return a stored body; `NotFoundError` for an unknown or malformed digest."""
        ...


def manifest_row(job_id: str, payload: RawPayload, digest: str) -> dict[str, Any]:
    """Return a saved payload's manifest row (`RAW_MANIFEST_SCHEMA`), the same in every
    `RawStore`: its `path` is where the lake keeps the body (`<provider>/<sha[:2]>/<sha>`)."""
    return {
        "job_id": job_id,
        "provider": payload.provider,
        "url": payload.url,
        "status_code": payload.status_code,
        "content_type": payload.content_type,
        "received_at": payload.received_at,
        "sha256": digest,
        "bytes": len(payload.body),
        "path": f"{payload.provider}/{digest[:2]}/{digest}",
    }


def check_digest(sha256: str, provider: str) -> None:
    """Refuse (`NotFoundError`) what is not a SHA-256 hex digest: no body has that name, and
    a `RawStore` keeps to its own paths."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise NotFoundError("not a payload digest", provider=provider, sha256=sha256)


class InstrumentStore(Protocol):
    """Instruments (by `instrument_id`) and their ticker intervals."""

    def instruments(self) -> pl.DataFrame:
        """Return every instrument (`INSTRUMENT_SCHEMA`)."""
        ...

    def symbol_history(self) -> pl.DataFrame:
        """Return every ticker interval (`HISTORY_SCHEMA`)."""
        ...

    def merge(self, instruments: pl.DataFrame, history: pl.DataFrame) -> None:
        """Replace instruments by id and the ticker history of the ids in `history`, atomically."""
        ...

    def version(self) -> Hashable:
        """Return a token that changes whenever instruments or history change."""
        ...


class ClientStore(Protocol):
    """API clients (credentials by hash) and tenants with their entitlements."""

    def save_client(self, client: ApiClient) -> None:
        """Insert or replace a client."""
        ...

    def client(self, client_id: str) -> ApiClient:
        """Return a client; `NotFoundError` if unknown."""
        ...

    def clients(self, tenant: str | None = None) -> list[ApiClient]:
        """Return the clients (of one tenant, or all) by creation time."""
        ...

    def save_tenant(self, tenant: Tenant) -> None:
        """Insert or replace a tenant and its entitlements."""
        ...

    def tenant(self, name: str) -> Tenant | None:
        """Return a tenant, or None when it has no record (no restrictions)."""
        ...


class JobCatalog(Protocol):
    """Jobs and their tasks (with leases), quality reports, dead letters and small state."""

    # -- jobs ------------------------------------------------------------------------------
    def save_job(self, job: IngestionJob) -> None:
        """Insert or replace a job."""
        ...

    def job(self, job_id: str) -> IngestionJob:
        """Return a job; `NotFoundError` if unknown."""
        ...

    def jobs(self, limit: int = 50, status: JobStatus | None = None) -> list[IngestionJob]:
        """Return jobs, newest first."""
        ...

    # -- tasks and leases ------------------------------------------------------------------
    def add_tasks(self, tasks: Sequence[JobTask]) -> None:
        """Add the tasks of a job (pending)."""
        ...

    def tasks(self, job_id: str) -> list[JobTask]:
        """Return the tasks of a job in order."""
        ...

    def open_tasks(self, job_id: str) -> int:
        """Return how many tasks of a job are neither succeeded nor failed (one count)."""
        ...

    def claim_task(
        self,
        worker: str,
        lease_s: float,
        now: datetime,
        job_id: str | None = None,
        *,
        queue: str | None = None,
        task_id: str | None = None,
    ) -> JobTask | None:
        """Lease the oldest pending task to `worker`; None if none is left.

        With `task_id`, that task only (a task queue outside the catalog named it).

        Of one job, of the jobs queued on `queue`, or of any job. Atomic across processes:
        two workers never hold the same task.
        """
        ...

    def heartbeat(self, task_id: str, worker: str, lease_s: float, now: datetime) -> bool:
        """Extend `worker`'s lease; False when the worker no longer holds the task."""
        ...

    def finish_task(self, task: JobTask, worker: str, now: datetime) -> bool:
        """Store a task's outcome (status, counts, errors) if `worker` still holds it.

        Return False (and store nothing) when the lease was lost to another worker.
        """
        ...

    def expire_leases(self, now: datetime) -> list[str]:
        """Return running tasks whose lease lapsed to pending; fail their jobs.

        Each such job becomes `failed` with an error detail of kind `lease_expired`,
        except a queued job (`job.queue`): it stays, its tasks go back to the queue, and a
        task that used the job's `max_attempts` fails with the reason.
        Return the ids of the jobs affected.
        """
        ...

    def reset_tasks(self, job_id: str, statuses: Sequence[TaskStatus]) -> int:
        """Put a job's tasks in `statuses` back to pending (for recovery); return how many."""
        ...

    # -- quality reports -------------------------------------------------------------------
    def save_report(self, report: DataQualityReport, created_at: datetime) -> None:
        """Store one batch report."""
        ...

    def reports(self, job_id: str | None = None, limit: int = 100) -> list[DataQualityReport]:
        """Return batch reports (of one job, or the latest of all), newest first."""
        ...

    # -- dead letters ----------------------------------------------------------------------
    def add_dead_letter(
        self,
        topic: str,
        payload: dict[str, Any],
        error: str,
        handler: str | None,
        created_at: datetime,
    ) -> int:
        """Keep a message a consumer could not handle; return its id."""
        ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead letters, newest first."""
        ...

    # -- small state (provider statistics, settings remembered by the store) ---------------
    def put_state(self, key: str, value: dict[str, Any]) -> None:
        """Keep a small JSON document under `key` (replacing the previous one)."""
        ...

    def get_state(self, key: str) -> dict[str, Any] | None:
        """Return the document kept under `key`, or None."""
        ...

    def setdefault_state(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Keep `value` under `key` unless a document is there; return the one kept.

        Atomic: of several processes racing, all get the first one's document.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class WorkflowCatalog(Protocol):
    """The reporting-side ingestion catalog; every call is scoped to one tenant.

    A tenant never sees, changes or runs another tenant's sources, rules, jobs, reports,
    dead letters or lineage: a lookup of another tenant's id is `NotFoundError`.
    """

    def save_source(self, source: DataSource, now: datetime) -> DataSource:
        """Insert or update a source (by tenant and source_id); return it as stored."""
        ...

    def source(self, tenant: str, source_id: str) -> DataSource:
        """Return a tenant's source; `NotFoundError` if it has none by that id."""
        ...

    def sources(self, tenant: str | None, include_disabled: bool = True) -> list[DataSource]:
        """Return a tenant's sources by id (`None`: every tenant's, for the scheduler)."""
        ...

    def set_enabled(self, tenant: str, source_id: str, enabled: bool) -> DataSource:
        """Enable or disable a source."""
        ...

    def sync_state(self, tenant: str, source_id: str) -> dict[str, Any] | None:
        """Return a source's sync state (an incremental source's cursor), or None."""
        ...

    def set_sync_state(self, tenant: str, source_id: str, state: dict[str, Any]) -> None:
        """Keep a source's sync state."""
        ...

    def save_rule(self, tenant: str, rule: TransformationRule, now: datetime) -> TransformationRule:
        """Store a rule: new ids as version 1, changes as the next version; return it."""
        ...

    def rule(self, tenant: str, rule_id: str, version: int | None = None) -> TransformationRule:
        """Return a rule's latest (or given) version."""
        ...

    def rules(self, tenant: str) -> list[TransformationRule]:
        """Return the latest version of each rule."""
        ...

    def rule_history(self, tenant: str, rule_id: str) -> list[TransformationRule]:
        """Return every version of a rule, oldest first."""
        ...

    def save_job(self, job: WorkflowJob, report: WorkflowReport | None = None) -> None:
        """Insert or update a job (and its quality report)."""
        ...

    def job(self, tenant: str, job_id: str) -> WorkflowJob:
        """Return a tenant's job."""
        ...

    def jobs(self, tenant: str, source_id: str | None = None, limit: int = 50) -> list[WorkflowJob]:
        """Return a tenant's jobs, newest first."""
        ...

    def report(self, tenant: str, job_id: str) -> WorkflowReport:
        """Return a job's quality report."""
        ...

    def add_dead_letters(
        self, tenant: str, job_id: str, source_id: str, rejected: pl.DataFrame, now: datetime
    ) -> int:
        """Keep rejected records (record, stage, reason); return how many."""
        ...

    def dead_letters(
        self,
        tenant: str,
        job_id: str | None = None,
        source_id: str | None = None,
        include_replayed: bool = False,
        limit: int = 1_000_000,
    ) -> pl.DataFrame:
        """Return dead letters in arrival order (`storage.workflows.DEAD_LETTER_SCHEMA`)."""
        ...

    def mark_replayed(self, tenant: str, ids: Sequence[int], job_id: str) -> int:
        """Record that dead letters went through again in `job_id`."""
        ...

    def add_lineage(self, tenant: str, entries: Sequence[dict[str, Any]], now: datetime) -> None:
        """Record what a job read and where it wrote."""
        ...

    def lineage(self, tenant: str, job_id: str) -> list[dict[str, Any]]:
        """Return a job's lineage entries in order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class Backend:
    """Every store of one platform; `kind` says where they live."""

    kind: Literal["lake", "postgres"]
    bars: BarStore
    actions: ActionStore
    quarantine: QuarantineStore
    scores: ScoreStore
    raw: RawStore
    instruments: InstrumentStore
    catalog: JobCatalog
    clients: ClientStore
    workflows: WorkflowCatalog

    def close(self) -> None:
        """Release connections, threads and file handles."""
        self.workflows.close()
        self.catalog.close()
        self.scores.close()
        self.bars.close()
