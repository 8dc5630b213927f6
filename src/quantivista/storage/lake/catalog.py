"""The embedded job catalog: jobs, tasks with leases, reports, dead letters and state in SQLite.

Several processes may share one catalog file: every write is one transaction begun with
`BEGIN IMMEDIATE` (SQLite's write lock, taken up front), so two workers never lease the
same task and a read-then-write never fails on a snapshot another writer made stale (a
deferred transaction that upgrades to writing gets `SQLITE_BUSY` at once, without waiting).
Waiting for the lock is bounded by the busy timeout (`sqlitedb.BUSY_TIMEOUT_S`). WAL mode lets
readers go on while a writer commits. One connection per catalog object, shared by its
threads under a lock.

Opening runs under a file lock (`<folder>/.locks/<name>.lock`, the data directory's lock
folder): turning a new database to WAL fails at once with "database is locked", without
waiting, when another connection is doing the same (seen with `qv ingest` processes
started together on a new data directory).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantivista.errors import NotFoundError, StorageError
from quantivista.model.auth import ApiClient, Tenant
from quantivista.model.jobs import DataQualityReport, IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.storage.contracts import DeadLetter
from quantivista.storage.lake.sqlitedb import open_immutable, open_writable, transaction

__all__ = ["DeadLetter", "SqliteCatalog", "lapse", "lease_expired_detail"]

# how long a writer waits for another process's write transaction before failing: commits
# take milliseconds, so this only ends a wait on a process that hangs holding the lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    source_id   TEXT NOT NULL,
    status      TEXT NOT NULL,
    start_time  TEXT,
    end_time    TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_start ON jobs(start_time);
CREATE TABLE IF NOT EXISTS job_tasks (
    task_id           TEXT PRIMARY KEY,
    job_id            TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    status            TEXT NOT NULL,
    worker            TEXT,
    lease_expires_at  TEXT,
    body              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_tasks_job ON job_tasks(job_id, seq);
CREATE INDEX IF NOT EXISTS job_tasks_status ON job_tasks(status, lease_expires_at);
CREATE TABLE IF NOT EXISTS quality_reports (
    report_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    quality_score REAL NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_job ON quality_reports(job_id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    error       TEXT NOT NULL,
    handler     TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_clients (
    client_id   TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenants (
    name        TEXT PRIMARY KEY,
    body        TEXT NOT NULL
);
"""


def lease_expired_detail(task: JobTask, now: datetime) -> dict[str, Any]:
    """Return the job error detail recorded when a task's worker stopped heartbeating."""
    return {
        "scope": "job",
        "kind": "lease_expired",
        "message": f"worker {task.worker} stopped heartbeating; its lease lapsed",
        "task_id": task.task_id,
        "worker": task.worker,
        "at": now.isoformat(),
    }


def lapse(job: IngestionJob | None, tasks: Sequence[JobTask], now: datetime) -> list[JobTask]:
    """Apply lapsed leases to `job` (in place) and return its tasks as they are to be saved.

    A job run by the process that submitted it fails (`recover` resumes it). A queued job
    stays as it is and its tasks go back to the queue for another worker, unless a task
    has used the job's `max_attempts`: then that task fails with the reason.
    """
    out = []
    for task in tasks:
        spent = (
            job is not None
            and job.queue is not None
            and job.max_attempts > 0
            and task.attempts >= job.max_attempts
        )
        if spent:
            reason = {
                "kind": "max_attempts",
                "message": f"gave up after {task.attempts} attempts: the last worker"
                f" ({task.worker}) stopped heartbeating",
            }
            out.append(
                task.model_copy(
                    update={
                        "status": TaskStatus.FAILED,
                        "lease_expires_at": None,
                        "finished_at": now,
                        "error_details": [*task.error_details, reason],
                    }
                )
            )
        else:
            out.append(
                task.model_copy(update={"status": TaskStatus.PENDING, "lease_expires_at": None})
            )
    if job is not None:
        if job.queue is None:
            job.status = JobStatus.FAILED
            job.end_time = now
        job.error_details.extend(lease_expired_detail(t, now) for t in tasks)
    return out


class SqliteCatalog:
    """The `JobCatalog` (and `ClientStore`) of the embedded platform, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # a catalog in a directory we may not write to (a read-only mount, a shared copy) is
        # opened immutable: reads work, writes fail with a StorageError
        self.read_only = self.path.exists() and not os.access(self.path.parent, os.W_OK)
        self._lock = threading.Lock()
        try:
            if self.read_only:
                self._conn = open_immutable(self.path)
                return
            self._conn = open_writable(self.path, _SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(
                "cannot open the catalog", path=str(self.path), error=str(exc)
            ) from exc

    def _tx(self, immediate: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        """Run the block in one transaction (IMMEDIATE: take the write lock up front).

        Every transaction that writes must be IMMEDIATE (see the module docstring).
        """
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        return transaction(self._conn, self._lock, begin, "catalog operation failed", self.path)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    # -- jobs ------------------------------------------------------------------------------
    def save_job(self, job: IngestionJob) -> None:
        """Insert or update a job."""
        with self._tx(immediate=True) as db:
            _save_job(db, job)

    def job(self, job_id: str) -> IngestionJob:
        """Return a job by id."""
        with self._tx() as db:
            row = db.execute("SELECT body FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError("unknown job", job_id=job_id)
        return IngestionJob.model_validate_json(row[0])

    def jobs(self, limit: int = 50, status: JobStatus | None = None) -> list[IngestionJob]:
        """Return the most recent jobs first."""
        where, args = ("WHERE status=?", (status.value,)) if status else ("", ())
        with self._tx() as db:
            rows = db.execute(
                f"SELECT body FROM jobs {where} ORDER BY start_time DESC, rowid DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [IngestionJob.model_validate_json(r[0]) for r in rows]

    # -- tasks and leases ------------------------------------------------------------------
    def add_tasks(self, tasks: Sequence[JobTask]) -> None:
        """Add tasks (replacing any with the same id)."""
        with self._tx(immediate=True) as db:
            for task in tasks:  # a job has tens of tasks, not millions
                _save_task(db, task)

    def tasks(self, job_id: str) -> list[JobTask]:
        """Return the tasks of a job in order."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT body FROM job_tasks WHERE job_id=? ORDER BY seq", (job_id,)
            ).fetchall()
        return [JobTask.model_validate_json(r[0]) for r in rows]

    def open_tasks(self, job_id: str) -> int:
        """Return how many tasks of a job are neither succeeded nor failed."""
        with self._tx() as db:
            row = db.execute(
                "SELECT count(*) FROM job_tasks WHERE job_id=?"
                " AND status NOT IN ('succeeded', 'failed')",
                (job_id,),
            ).fetchone()
        return int(row[0]) if row else 0

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
        """Lease the oldest pending task (of one job, a queue, one task, or any) of a live job."""
        where = ""
        args: tuple[str, ...] = ()
        if task_id:
            where, args = where + " AND t.task_id=?", (*args, task_id)
        if job_id:
            where, args = where + " AND t.job_id=?", (*args, job_id)
        if queue is not None:
            where, args = where + " AND json_extract(j.body, '$.queue')=?", (*args, queue)
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT t.body FROM job_tasks t JOIN jobs j ON j.job_id = t.job_id"
                f" WHERE t.status='pending' AND j.status IN ('pending', 'running'){where}"
                " ORDER BY j.start_time, t.job_id, t.seq LIMIT 1",
                args,
            ).fetchone()
            if row is None:
                return None
            task = JobTask.model_validate_json(row[0])
            task = task.claimed(worker, now, lease_s)
            _save_task(db, task)
        return task

    def heartbeat(self, task_id: str, worker: str, lease_s: float, now: datetime) -> bool:
        """Extend `worker`'s lease on a running task; False when it no longer holds it."""
        with self._tx(immediate=True) as db:
            task = _held(db, task_id, worker)
            if task is None:
                return False
            task = task.renewed(now, lease_s)
            _save_task(db, task)
        return True

    def finish_task(self, task: JobTask, worker: str, now: datetime) -> bool:
        """Store a finished task if `worker` still holds its lease."""
        with self._tx(immediate=True) as db:
            if _held(db, task.task_id, worker) is None:
                return False
            done = task.finished(worker, now)
            _save_task(db, done)
        return True

    def expire_leases(self, now: datetime) -> list[str]:
        """Apply lapsed leases (see `lapse`); return the jobs affected."""
        if self.read_only:  # nothing can be changed here; the jobs show as they were left
            return []
        with self._tx(immediate=True) as db:
            rows = db.execute(
                "SELECT body FROM job_tasks WHERE status=? AND lease_expires_at < ?"
                " ORDER BY job_id, seq, rowid",
                (TaskStatus.RUNNING.value, _iso(now)),
            ).fetchall()
            lapsed = [JobTask.model_validate_json(r[0]) for r in rows]
            jobs: dict[str, list[JobTask]] = {}
            for task in lapsed:
                jobs.setdefault(task.job_id, []).append(task)
            for job_id, tasks in jobs.items():
                row = db.execute("SELECT body FROM jobs WHERE job_id=?", (job_id,)).fetchone()
                job = None if row is None else IngestionJob.model_validate_json(row[0])
                for task in lapse(job, tasks, now):
                    _save_task(db, task)
                if job is not None:
                    _save_job(db, job)
        return sorted(jobs)

    def reset_tasks(self, job_id: str, statuses: Sequence[TaskStatus]) -> int:
        """Put the job's tasks in `statuses` back to pending."""
        count = 0
        with self._tx(immediate=True) as db:
            rows = db.execute(
                "SELECT body FROM job_tasks WHERE job_id=? ORDER BY seq", (job_id,)
            ).fetchall()
            for r in rows:
                task = JobTask.model_validate_json(r[0])
                if task.status in statuses:
                    _save_task(db, task.reset())
                    count += 1
        return count

    # -- quality reports -------------------------------------------------------------------
    def save_report(self, report: DataQualityReport, created_at: datetime) -> None:
        """Store one batch report."""
        with self._tx(immediate=True) as db:
            db.execute(
                "INSERT INTO quality_reports(job_id, created_at, quality_score, body) "
                "VALUES (?,?,?,?)",
                (
                    report.job_id,
                    created_at.isoformat(),
                    report.quality_score,
                    report.model_dump_json(),
                ),
            )

    def reports(self, job_id: str | None = None, limit: int = 100) -> list[DataQualityReport]:
        """Return batch reports (of one job, or the latest of all), newest first."""
        with self._tx() as db:
            if job_id is None:
                rows = db.execute(
                    "SELECT body FROM quality_reports ORDER BY report_id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT body FROM quality_reports WHERE job_id=? ORDER BY report_id DESC "
                    "LIMIT ?",
                    (job_id, limit),
                ).fetchall()
        return [DataQualityReport.model_validate_json(r[0]) for r in rows]

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
        with self._tx(immediate=True) as db:
            cur = db.execute(
                "INSERT INTO dead_letters(topic, payload, error, handler, created_at) "
                "VALUES (?,?,?,?,?)",
                (topic, json.dumps(payload, default=str), error, handler, created_at.isoformat()),
            )
            return int(cur.lastrowid or 0)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead letters, newest first."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, topic, payload, error, handler, created_at FROM dead_letters "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(
                id=r[0],
                topic=r[1],
                payload=json.loads(r[2]),
                error=r[3],
                handler=r[4],
                created_at=r[5],
            )
            for r in rows
        ]

    # -- small state -----------------------------------------------------------------------
    def put_state(self, key: str, value: dict[str, Any]) -> None:
        """Keep a small JSON document under `key`."""
        with self._tx(immediate=True) as db:
            db.execute(
                "INSERT INTO state(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value, default=str)),
            )

    def get_state(self, key: str) -> dict[str, Any] | None:
        """Return the document kept under `key`, or None."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def setdefault_state(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Keep `value` under `key` unless one is there; return the document kept."""
        with self._tx(immediate=True) as db:
            db.execute(
                "INSERT INTO state(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (key, json.dumps(value, default=str)),
            )
            row = db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return dict(json.loads(row[0]))

    # -- API clients and tenants ------------------------------------------------------------
    def save_client(self, client: ApiClient) -> None:
        """Insert or replace a client."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_clients(client_id, tenant, created_at, body) VALUES (?,?,?,?) "
                "ON CONFLICT(client_id) DO UPDATE SET tenant=excluded.tenant, body=excluded.body",
                (client.client_id, client.tenant, _iso(client.created_at),
                 client.model_dump_json()),
            )  # fmt: skip

    def client(self, client_id: str) -> ApiClient:
        """Return a client by id."""
        with self._tx() as db:
            row = db.execute(
                "SELECT body FROM api_clients WHERE client_id=?", (client_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown API client", client_id=client_id)
        return ApiClient.model_validate_json(row[0])

    def clients(self, tenant: str | None = None) -> list[ApiClient]:
        """Return clients (of one tenant, or all), oldest first."""
        where, args = ("WHERE tenant=?", (tenant,)) if tenant else ("", ())
        with self._tx() as db:
            rows = db.execute(
                f"SELECT body FROM api_clients {where} ORDER BY created_at, client_id", args
            ).fetchall()
        return [ApiClient.model_validate_json(r[0]) for r in rows]

    def save_tenant(self, tenant: Tenant) -> None:
        """Insert or replace a tenant."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO tenants(name, body) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET body=excluded.body",
                (tenant.name, tenant.model_dump_json()),
            )

    def tenant(self, name: str) -> Tenant | None:
        """Return a tenant's record, or None."""
        with self._tx() as db:
            row = db.execute("SELECT body FROM tenants WHERE name=?", (name,)).fetchone()
        return None if row is None else Tenant.model_validate_json(row[0])


def _save_job(db: sqlite3.Connection, job: IngestionJob) -> None:
    db.execute(
        "INSERT INTO jobs(job_id, source_id, status, start_time, end_time, body) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT(job_id) DO UPDATE SET status=excluded.status,"
        " start_time=excluded.start_time, end_time=excluded.end_time, body=excluded.body",
        (
            job.job_id,
            job.source_id,
            job.status.value,
            _iso(job.start_time),
            _iso(job.end_time),
            job.model_dump_json(),
        ),
    )


def _save_task(db: sqlite3.Connection, task: JobTask) -> None:
    db.execute(
        "INSERT INTO job_tasks(task_id, job_id, seq, status, worker, lease_expires_at, body) "
        "VALUES (?,?,?,?,?,?,?) ON CONFLICT(task_id) DO UPDATE SET status=excluded.status,"
        " worker=excluded.worker, lease_expires_at=excluded.lease_expires_at,"
        " body=excluded.body",
        (
            task.task_id,
            task.job_id,
            task.seq,
            task.status.value,
            task.worker,
            _iso(task.lease_expires_at),
            task.model_dump_json(),
        ),
    )


def _held(db: sqlite3.Connection, task_id: str, worker: str) -> JobTask | None:
    """Return the task if it is running under `worker`'s lease, else None."""
    row = db.execute(
        "SELECT body FROM job_tasks WHERE task_id=? AND status=? AND worker=?",
        (task_id, TaskStatus.RUNNING.value, worker),
    ).fetchone()
    return None if row is None else JobTask.model_validate_json(row[0])


def _iso(value: datetime | None) -> str | None:
    """Return a UTC instant as fixed-width text: comparing the texts compares the instants."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00") if value else None
