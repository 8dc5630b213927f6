"""The catalog: jobs, quality reports and dead letters in SQLite next to the lake."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from quantivista.errors import NotFoundError, StorageError
from quantivista.model.jobs import DataQualityReport, IngestionJob

__all__ = ["Catalog", "DeadLetter"]

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
"""


class DeadLetter(dict[str, Any]):
    """A message that a consumer failed to handle, kept for inspection and replay."""


class Catalog:
    """Metadata of the embedded platform in one SQLite file (WAL mode, safe across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._conn:
                    yield self._conn
            except sqlite3.Error as exc:
                raise StorageError("catalog operation failed", path=str(self.path)) from exc

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    # -- jobs ------------------------------------------------------------------------------
    def save_job(self, job: IngestionJob) -> None:
        """Insert or update a job."""
        with self._tx() as db:
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

    def job(self, job_id: str) -> IngestionJob:
        """Return a job by id."""
        with self._tx() as db:
            row = db.execute("SELECT body FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError("unknown job", job_id=job_id)
        return IngestionJob.model_validate_json(row[0])

    def jobs(self, limit: int = 50) -> list[IngestionJob]:
        """Return the most recent jobs first."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT body FROM jobs ORDER BY start_time DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [IngestionJob.model_validate_json(r[0]) for r in rows]

    # -- quality reports -------------------------------------------------------------------
    def save_report(self, report: DataQualityReport, created_at: datetime) -> None:
        """Store one batch report."""
        with self._tx() as db:
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
        with self._tx() as db:
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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
