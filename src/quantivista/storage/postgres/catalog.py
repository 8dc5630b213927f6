"""The job catalog in PostgreSQL: jobs, tasks with leases, reports, dead letters and state.

Every call is one transaction. A task claim locks the task it takes with
`SELECT ... FOR UPDATE SKIP LOCKED`: workers in any number of processes and hosts never
hold the same task, and none waits for another's claim. Jobs and tasks are kept as JSON
documents (`body`) next to the columns the queries filter and sort by.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from quantivista.errors import NotFoundError
from quantivista.model.auth import ApiClient, Tenant
from quantivista.model.jobs import DataQualityReport, IngestionJob, JobStatus, JobTask, TaskStatus
from quantivista.storage.contracts import DeadLetter
from quantivista.storage.lake.catalog import lapse
from quantivista.storage.postgres.db import maps_storage_errors, transaction

__all__ = ["PgCatalog"]

_WHAT = "catalog operation"


@maps_storage_errors
class PgCatalog:
    """The `JobCatalog` (and `ClientStore`) of the PostgreSQL backend.

    It shares the backend's connection pool; `close` closes the pool only when the catalog
    was given `owns_pool=True` (the backend closes its one pool once).
    """

    def __init__(self, pool: ConnectionPool[Any], *, owns_pool: bool = False) -> None:
        self.pool = pool
        self._owns_pool = owns_pool

    def close(self) -> None:
        """Close the pool if this catalog owns it."""
        if self._owns_pool:
            self.pool.close()

    # -- jobs ------------------------------------------------------------------------------
    def save_job(self, job: IngestionJob) -> None:
        """Insert or replace a job."""
        with transaction(self.pool, _WHAT) as conn:
            _save_job(conn, job)

    def job(self, job_id: str) -> IngestionJob:
        """Return a job; `NotFoundError` if unknown."""
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute(
                "SELECT body::text FROM jobs WHERE job_id = %s", (job_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown job", job_id=job_id)
        return IngestionJob.model_validate_json(row[0])

    def jobs(self, limit: int = 50, status: JobStatus | None = None) -> list[IngestionJob]:
        """Return jobs, newest first (by start time, then by when they were first saved)."""
        where, args = ("WHERE status = %s", [status.value]) if status else ("", [])
        with transaction(self.pool, _WHAT) as conn:
            rows = conn.execute(
                f"SELECT body::text FROM jobs {where}"
                " ORDER BY start_time DESC NULLS LAST, ins DESC LIMIT %s",
                [*args, limit],
            ).fetchall()
        return [IngestionJob.model_validate_json(r[0]) for r in rows]

    # -- tasks and leases ------------------------------------------------------------------
    def add_tasks(self, tasks: Sequence[JobTask]) -> None:
        """Add the tasks of a job (replacing any with the same id)."""
        with transaction(self.pool, _WHAT) as conn:
            for task in tasks:  # a job has tens of tasks, not millions
                _save_task(conn, task)

    def tasks(self, job_id: str) -> list[JobTask]:
        """Return the tasks of a job in order."""
        with transaction(self.pool, _WHAT) as conn:
            rows = conn.execute(
                "SELECT body::text FROM job_tasks WHERE job_id = %s ORDER BY seq, ins", (job_id,)
            ).fetchall()
        return [JobTask.model_validate_json(r[0]) for r in rows]

    def open_tasks(self, job_id: str) -> int:
        """Return how many tasks of a job are neither succeeded nor failed."""
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute(
                "SELECT count(*) FROM job_tasks WHERE job_id = %s"
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
        """Lease the oldest pending task (of one job, a queue, one task, or any) of a live job.

        Tasks locked by a concurrent claim are skipped, not waited for.
        """
        where = ""
        args: list[str] = []
        if task_id:
            where += " AND t.task_id = %s"
            args.append(task_id)
        if job_id:
            where += " AND t.job_id = %s"
            args.append(job_id)
        if queue is not None:
            where += " AND j.body->>'queue' = %s"
            args.append(queue)
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute(
                "SELECT t.body::text FROM job_tasks t JOIN jobs j ON j.job_id = t.job_id"
                " WHERE t.status = 'pending' AND j.status IN ('pending', 'running')"
                + where
                + ' ORDER BY j.start_time NULLS FIRST, t.job_id COLLATE "C", t.seq, t.ins'
                " LIMIT 1 FOR UPDATE OF t SKIP LOCKED",
                args,
            ).fetchone()
            if row is None:
                return None
            task = JobTask.model_validate_json(row[0])
            task = task.claimed(worker, now, lease_s)
            _save_task(conn, task)
        return task

    def heartbeat(self, task_id: str, worker: str, lease_s: float, now: datetime) -> bool:
        """Extend `worker`'s lease; False when the worker no longer holds the task."""
        with transaction(self.pool, _WHAT) as conn:
            task = _held(conn, task_id, worker)
            if task is None:
                return False
            task = task.renewed(now, lease_s)
            _save_task(conn, task)
        return True

    def finish_task(self, task: JobTask, worker: str, now: datetime) -> bool:
        """Store a task's outcome if `worker` still holds it; False (nothing stored) if not."""
        with transaction(self.pool, _WHAT) as conn:
            if _held(conn, task.task_id, worker) is None:
                return False
            done = task.finished(worker, now)
            _save_task(conn, done)
        return True

    def expire_leases(self, now: datetime) -> list[str]:
        """Apply lapsed leases at once (see `lapse`); return the ids of the jobs affected.

        A job run by its submitter becomes `failed` with an error detail of kind
        `lease_expired` per task; a queued job's tasks go back to its queue.
        """
        with transaction(self.pool, _WHAT) as conn:
            rows = conn.execute(
                "SELECT body::text FROM job_tasks WHERE status = 'running'"
                ' AND lease_expires_at < %s ORDER BY job_id COLLATE "C", seq, ins FOR UPDATE',
                (now,),
            ).fetchall()
            jobs: dict[str, list[JobTask]] = {}
            for r in rows:
                task = JobTask.model_validate_json(r[0])
                jobs.setdefault(task.job_id, []).append(task)
            for job_id, tasks in jobs.items():
                found = conn.execute(
                    "SELECT body::text FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
                ).fetchone()
                job = None if found is None else IngestionJob.model_validate_json(found[0])
                for task in lapse(job, tasks, now):
                    _save_task(conn, task)
                if job is not None:
                    _save_job(conn, job)
        return sorted(jobs)

    def reset_tasks(self, job_id: str, statuses: Sequence[TaskStatus]) -> int:
        """Put a job's tasks in `statuses` back to pending (for recovery); return how many."""
        wanted = [TaskStatus(s).value for s in statuses]
        count = 0
        with transaction(self.pool, _WHAT) as conn:
            rows = conn.execute(
                "SELECT body::text FROM job_tasks WHERE job_id = %s AND status = ANY(%s)"
                " ORDER BY seq, ins FOR UPDATE",
                (job_id, wanted),
            ).fetchall()
            for r in rows:
                task = JobTask.model_validate_json(r[0])
                _save_task(conn, task.reset())
                count += 1
        return count

    # -- quality reports -------------------------------------------------------------------
    def save_report(self, report: DataQualityReport, created_at: datetime) -> None:
        """Store one batch report."""
        with transaction(self.pool, _WHAT) as conn:
            conn.execute(
                "INSERT INTO quality_reports (job_id, created_at, quality_score, body)"
                " VALUES (%s, %s, %s, %s::json)",
                (report.job_id, created_at, report.quality_score, report.model_dump_json()),
            )

    def reports(self, job_id: str | None = None, limit: int = 100) -> list[DataQualityReport]:
        """Return batch reports (of one job, or the latest of all), newest first."""
        with transaction(self.pool, _WHAT) as conn:
            if job_id is None:
                rows = conn.execute(
                    "SELECT body::text FROM quality_reports ORDER BY report_id DESC LIMIT %s",
                    (limit,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT body::text FROM quality_reports WHERE job_id = %s"
                    " ORDER BY report_id DESC LIMIT %s",
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
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute(
                "INSERT INTO dead_letters (topic, payload, error, handler, created_at)"
                " VALUES (%s, %s::json, %s, %s, %s) RETURNING id",
                (topic, json.dumps(payload, default=str), error, handler, created_at.isoformat()),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return dead letters, newest first."""
        with transaction(self.pool, _WHAT) as conn:
            rows = conn.execute(
                "SELECT id, topic, payload::text, error, handler, created_at FROM dead_letters"
                " ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(
                id=int(r[0]),
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
        """Keep a small JSON document under `key` (replacing the previous one)."""
        with transaction(self.pool, _WHAT) as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (%s, %s::json)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value, default=str)),
            )

    def get_state(self, key: str) -> dict[str, Any] | None:
        """Return the document kept under `key`, or None."""
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute("SELECT value::text FROM state WHERE key = %s", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def setdefault_state(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Keep `value` under `key` unless a document is there; return the one kept.

        Of several processes racing, the first insert wins; the others wait for its commit
        (the key's unique index) and read its document.
        """
        with transaction(self.pool, _WHAT) as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (%s, %s::json) ON CONFLICT (key) DO NOTHING",
                (key, json.dumps(value, default=str)),
            )
            row = conn.execute("SELECT value::text FROM state WHERE key = %s", (key,)).fetchone()
        assert row is not None
        return dict(json.loads(row[0]))

    # -- API clients and tenants (the `ClientStore`) ---------------------------------------
    def save_client(self, client: ApiClient) -> None:
        """Insert or replace a client."""
        with transaction(self.pool, _WHAT) as conn:
            conn.execute(
                "INSERT INTO api_clients (client_id, tenant, created_at, body)"
                " VALUES (%s, %s, %s, %s::json) ON CONFLICT (client_id) DO UPDATE SET"
                " tenant = excluded.tenant, body = excluded.body",
                (client.client_id, client.tenant, client.created_at, client.model_dump_json()),
            )

    def client(self, client_id: str) -> ApiClient:
        """Return a client; `NotFoundError` if unknown."""
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute(
                "SELECT body::text FROM api_clients WHERE client_id = %s", (client_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown API client", client_id=client_id)
        return ApiClient.model_validate_json(row[0])

    def clients(self, tenant: str | None = None) -> list[ApiClient]:
        """Return the clients (of one tenant, or all) by creation time."""
        where, args = ("WHERE tenant = %s", [tenant]) if tenant else ("", [])
        with transaction(self.pool, _WHAT) as conn:
            rows = conn.execute(
                f"SELECT body::text FROM api_clients {where}"
                ' ORDER BY created_at, client_id COLLATE "C"',
                args,
            ).fetchall()
        return [ApiClient.model_validate_json(r[0]) for r in rows]

    def save_tenant(self, tenant: Tenant) -> None:
        """Insert or replace a tenant and its entitlements."""
        with transaction(self.pool, _WHAT) as conn:
            conn.execute(
                "INSERT INTO tenants (name, body) VALUES (%s, %s::json)"
                " ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                (tenant.name, tenant.model_dump_json()),
            )

    def tenant(self, name: str) -> Tenant | None:
        """Return a tenant, or None when it has no record (no restrictions)."""
        with transaction(self.pool, _WHAT) as conn:
            row = conn.execute("SELECT body::text FROM tenants WHERE name = %s", (name,)).fetchone()
        return None if row is None else Tenant.model_validate_json(row[0])


def _save_job(conn: Connection[Any], job: IngestionJob) -> None:
    conn.execute(
        "INSERT INTO jobs (job_id, source_id, status, start_time, end_time, body)"
        " VALUES (%s, %s, %s, %s, %s, %s::json) ON CONFLICT (job_id) DO UPDATE SET"
        " status = excluded.status, start_time = excluded.start_time,"
        " end_time = excluded.end_time, body = excluded.body",
        (
            job.job_id,
            job.source_id,
            job.status.value,
            job.start_time,
            job.end_time,
            job.model_dump_json(),
        ),
    )


def _save_task(conn: Connection[Any], task: JobTask) -> None:
    conn.execute(
        "INSERT INTO job_tasks (task_id, job_id, seq, status, worker, lease_expires_at, body)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s::json) ON CONFLICT (task_id) DO UPDATE SET"
        " status = excluded.status, worker = excluded.worker,"
        " lease_expires_at = excluded.lease_expires_at, body = excluded.body",
        (
            task.task_id,
            task.job_id,
            task.seq,
            task.status.value,
            task.worker,
            task.lease_expires_at,
            task.model_dump_json(),
        ),
    )


def _held(conn: Connection[Any], task_id: str, worker: str) -> JobTask | None:
    """Return the task, locked, if it is running under `worker`'s lease; else None."""
    row = conn.execute(
        "SELECT body::text FROM job_tasks WHERE task_id = %s AND status = 'running'"
        " AND worker = %s FOR UPDATE",
        (task_id, worker),
    ).fetchone()
    return None if row is None else JobTask.model_validate_json(row[0])
