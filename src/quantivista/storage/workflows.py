"""The reporting-side ingestion catalog over SQL: one implementation, two dialects.

Tables (the same in SQLite and PostgreSQL; PostgreSQL's come from migration 0003 with
UUID ids, `json` columns and row-level security by tenant):

- `data_sources`: one row per (tenant_id, source_id), the source as JSON, enabled flag,
  the sync state (an incremental source's cursor);
- `transformation_rules`: one row per (tenant_id, rule_id, version); an update that
  changes a rule stores the next version;
- `ingestion_jobs`: one row per job_id, with its quality report;
- `ingestion_dead_letters`: records that failed rules or checks, with the reason, until
  replayed (`replayed_job_id`);
- `ingestion_lineage`: what each job read (input URI with its sha256, or offsets/cursor)
  and where it wrote.

Every method takes the tenant and touches only that tenant's rows. In PostgreSQL the
tenant also goes into the transaction (`qv.tenant`), so the row-level policies hold even
if a query here forgot its `tenant_id` filter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import polars as pl

from quantivista.errors import NotFoundError
from quantivista.model.workflow import (
    DataQualityReport,
    DataSource,
    IngestionJob,
    TransformationRule,
)

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "SQLITE_SCHEMA",
    "Cursor",
    "SqlWorkflowCatalog",
]

DEAD_LETTER_SCHEMA = pl.Schema(
    {
        "id": pl.Int64(),
        "job_id": pl.String(),
        "source_id": pl.String(),
        "record": pl.String(),
        "stage": pl.String(),
        "reason": pl.String(),
        "created_at": pl.String(),
        "replayed_job_id": pl.String(),
    }
)

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS data_sources (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    source_type  TEXT NOT NULL,
    ingestion_mode TEXT NOT NULL,
    data_format  TEXT NOT NULL,
    connection_config TEXT NOT NULL,
    schedule     TEXT,
    enabled      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    body         TEXT NOT NULL,
    sync_state   TEXT,
    UNIQUE (tenant_id, source_id)
);
CREATE TABLE IF NOT EXISTS transformation_rules (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    rule_id      TEXT NOT NULL,
    version      INTEGER NOT NULL,
    rule_type    TEXT NOT NULL,
    source_field TEXT,
    target_field TEXT,
    transformation_logic TEXT NOT NULL,
    validation_criteria TEXT,
    enabled      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (tenant_id, rule_id, version)
);
CREATE TABLE IF NOT EXISTS ingestion_jobs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    job_id       TEXT NOT NULL UNIQUE,
    source_id    TEXT NOT NULL,
    status       TEXT NOT NULL,
    records_processed INTEGER NOT NULL,
    records_failed INTEGER NOT NULL,
    start_time   TEXT NOT NULL,
    end_time     TEXT,
    error_details TEXT,
    body         TEXT NOT NULL,
    quality      TEXT
);
CREATE INDEX IF NOT EXISTS ingestion_jobs_source ON ingestion_jobs (tenant_id, source_id);
CREATE TABLE IF NOT EXISTS ingestion_dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    record       TEXT NOT NULL,
    stage        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    replayed_job_id TEXT
);
CREATE INDEX IF NOT EXISTS ingestion_dead_letters_job ON ingestion_dead_letters (tenant_id, job_id);
CREATE TABLE IF NOT EXISTS ingestion_lineage (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    input_uri    TEXT NOT NULL,
    sha256       TEXT,
    offset_start INTEGER,
    offset_end   INTEGER,
    cursor       TEXT,
    rows         INTEGER NOT NULL,
    lake_table   TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ingestion_lineage_job ON ingestion_lineage (tenant_id, job_id);
"""


class Cursor(Protocol):
    """The part of a DB-API cursor the catalog uses."""

    def execute(self, query: Any, params: Any = ...) -> Any: ...

    def executemany(self, query: Any, params_seq: Any) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def _doc(value: Any) -> Any:
    """Return a JSON column's value as Python (SQLite gives text, psycopg parsed JSON)."""
    return json.loads(value) if isinstance(value, str) else value


class SqlWorkflowCatalog:
    """The `WorkflowCatalog`: subclasses give `_tx` (a transaction scoped to a tenant)."""

    placeholder = "?"

    def _tx(self, tenant: str | None) -> AbstractContextManager[Cursor]:
        """Return a transaction's cursor; `tenant=None`: every tenant (the scheduler)."""
        raise NotImplementedError

    def _new_id(self) -> str | None:
        """Return a new row id, or None where the database makes it."""
        return None

    def _q(self, query: str) -> str:
        return query if self.placeholder == "?" else re.sub(r"\?", self.placeholder, query)

    def _run(self, cur: Cursor, query: str, params: Sequence[Any] = ()) -> Cursor:
        cur.execute(self._q(query), tuple(params))
        return cur

    def _insert(self, cur: Cursor, table: str, row: dict[str, Any], uuid: bool = True) -> None:
        new_id = self._new_id() if uuid else None
        if new_id is not None:
            row = {"id": new_id, **row}
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._run(cur, f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))

    # -- sources ---------------------------------------------------------------------------
    def save_source(self, source: DataSource, now: datetime) -> DataSource:
        """Insert or update a source (by tenant and source_id); return it as stored."""
        tenant = source.tenant_id
        with self._tx(tenant) as cur:
            row = self._run(
                cur,
                "SELECT created_at FROM data_sources WHERE tenant_id=? AND source_id=?",
                (tenant, source.source_id),
            ).fetchone()
            created = source.created_at or now
            if row is not None:
                first = row[0]
                created = first if isinstance(first, datetime) else datetime.fromisoformat(first)
            stored = source.model_copy(update={"created_at": created})
            values = {
                "source_type": stored.source_type.value,
                "ingestion_mode": stored.ingestion_mode.value,
                "data_format": stored.data_format.value,
                "connection_config": json.dumps(stored.connection_config),
                "schedule": stored.schedule,
                "enabled": stored.enabled,
                "body": stored.model_dump_json(),
            }
            if row is None:
                self._insert(
                    cur,
                    "data_sources",
                    {
                        "tenant_id": tenant,
                        "source_id": stored.source_id,
                        "created_at": created.isoformat(),
                        **values,
                    },
                )
            else:
                sets = ", ".join(f"{k}=?" for k in values)
                self._run(
                    cur,
                    f"UPDATE data_sources SET {sets} WHERE tenant_id=? AND source_id=?",
                    [*values.values(), tenant, stored.source_id],
                )
        return stored

    def source(self, tenant: str, source_id: str) -> DataSource:
        """Return a tenant's source; `NotFoundError` when it has none by that id."""
        with self._tx(tenant) as cur:
            row = self._run(
                cur,
                "SELECT body FROM data_sources WHERE tenant_id=? AND source_id=?",
                (tenant, source_id),
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown source", source_id=source_id)
        return DataSource.model_validate(_doc(row[0]))

    def sources(self, tenant: str | None, include_disabled: bool = True) -> list[DataSource]:
        """Return a tenant's sources by source_id (`tenant=None`: every tenant's)."""
        where, params = "", list[Any]()
        if tenant is not None:
            where, params = "WHERE tenant_id=?", [tenant]
        if not include_disabled:
            where += (" AND" if where else "WHERE") + " enabled=?"
            params.append(True)
        with self._tx(tenant) as cur:
            rows = self._run(
                cur, f"SELECT body FROM data_sources {where} ORDER BY tenant_id, source_id", params
            ).fetchall()
        return [DataSource.model_validate(_doc(r[0])) for r in rows]

    def set_enabled(self, tenant: str, source_id: str, enabled: bool) -> DataSource:
        """Enable or disable a source; return it."""
        source = self.source(tenant, source_id).model_copy(update={"enabled": enabled})
        with self._tx(tenant) as cur:
            self._run(
                cur,
                "UPDATE data_sources SET enabled=?, body=? WHERE tenant_id=? AND source_id=?",
                (enabled, source.model_dump_json(), tenant, source_id),
            )
        return source

    def sync_state(self, tenant: str, source_id: str) -> dict[str, Any] | None:
        """Return the sync state (cursor) of a source, or None."""
        with self._tx(tenant) as cur:
            row = self._run(
                cur,
                "SELECT sync_state FROM data_sources WHERE tenant_id=? AND source_id=?",
                (tenant, source_id),
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown source", source_id=source_id)
        return _doc(row[0]) if row[0] is not None else None

    def set_sync_state(self, tenant: str, source_id: str, state: dict[str, Any]) -> None:
        """Keep a source's sync state (after its job committed the rows it covers)."""
        with self._tx(tenant) as cur:
            self._run(
                cur,
                "UPDATE data_sources SET sync_state=? WHERE tenant_id=? AND source_id=?",
                (json.dumps(state, default=str), tenant, source_id),
            )

    # -- rules -----------------------------------------------------------------------------
    def save_rule(self, tenant: str, rule: TransformationRule, now: datetime) -> TransformationRule:
        """Store a rule: a new id as version 1, a change as the next version (else as is)."""
        with self._tx(tenant) as cur:
            latest = self._latest_rule(cur, tenant, rule.rule_id)
            if latest is not None:
                same = latest.model_copy(update={"version": rule.version}) == rule
                if same:
                    return latest
                rule = rule.model_copy(update={"version": latest.version + 1})
            else:
                rule = rule.model_copy(update={"version": 1})
            self._insert(
                cur,
                "transformation_rules",
                {
                    "tenant_id": tenant,
                    "rule_id": rule.rule_id,
                    "version": rule.version,
                    "rule_type": rule.rule_type.value,
                    "source_field": rule.source_field,
                    "target_field": rule.target_field,
                    "transformation_logic": rule.transformation_logic,
                    "validation_criteria": rule.validation_criteria,
                    "enabled": rule.enabled,
                    "created_at": now.isoformat(),
                },
            )
        return rule

    _RULE_COLUMNS = (
        "rule_id, version, rule_type, source_field, target_field, transformation_logic,"
        " validation_criteria, enabled"
    )

    def _rule_of(self, row: Sequence[Any]) -> TransformationRule:
        keys = [k.strip() for k in self._RULE_COLUMNS.split(",")]
        return TransformationRule.model_validate(dict(zip(keys, row, strict=True)))

    def _latest_rule(self, cur: Cursor, tenant: str, rule_id: str) -> TransformationRule | None:
        row = self._run(
            cur,
            f"SELECT {self._RULE_COLUMNS} FROM transformation_rules"
            " WHERE tenant_id=? AND rule_id=? ORDER BY version DESC LIMIT 1",
            (tenant, rule_id),
        ).fetchone()
        return self._rule_of(row) if row is not None else None

    def rule(self, tenant: str, rule_id: str, version: int | None = None) -> TransformationRule:
        """Return a rule's latest (or given) version; `NotFoundError` if unknown."""
        with self._tx(tenant) as cur:
            if version is None:
                found = self._latest_rule(cur, tenant, rule_id)
            else:
                row = self._run(
                    cur,
                    f"SELECT {self._RULE_COLUMNS} FROM transformation_rules"
                    " WHERE tenant_id=? AND rule_id=? AND version=?",
                    (tenant, rule_id, version),
                ).fetchone()
                found = self._rule_of(row) if row is not None else None
        if found is None:
            raise NotFoundError("unknown rule", rule_id=rule_id, version=version)
        return found

    def rules(self, tenant: str) -> list[TransformationRule]:
        """Return the latest version of each of a tenant's rules, by rule_id."""
        with self._tx(tenant) as cur:
            rows = self._run(
                cur,
                f"SELECT {self._RULE_COLUMNS} FROM transformation_rules r WHERE tenant_id=?"
                " AND version = (SELECT max(version) FROM transformation_rules m"
                " WHERE m.tenant_id = r.tenant_id AND m.rule_id = r.rule_id) ORDER BY rule_id",
                (tenant,),
            ).fetchall()
        return [self._rule_of(r) for r in rows]

    def rule_history(self, tenant: str, rule_id: str) -> list[TransformationRule]:
        """Return every version of a rule, oldest first."""
        with self._tx(tenant) as cur:
            rows = self._run(
                cur,
                f"SELECT {self._RULE_COLUMNS} FROM transformation_rules"
                " WHERE tenant_id=? AND rule_id=? ORDER BY version",
                (tenant, rule_id),
            ).fetchall()
        if not rows:
            raise NotFoundError("unknown rule", rule_id=rule_id)
        return [self._rule_of(r) for r in rows]

    # -- jobs and reports --------------------------------------------------------------------
    def save_job(self, job: IngestionJob, report: DataQualityReport | None = None) -> None:
        """Insert or update a job (and its quality report, when given)."""
        values = {
            "source_id": job.source_id,
            "status": job.status.value,
            "records_processed": job.records_processed,
            "records_failed": job.records_failed,
            "start_time": job.start_time.isoformat(),
            "end_time": job.end_time.isoformat() if job.end_time else None,
            "error_details": json.dumps(job.error_details) if job.error_details else None,
            "body": job.model_dump_json(),
        }
        with self._tx(job.tenant_id) as cur:
            row = self._run(
                cur,
                "SELECT tenant_id FROM ingestion_jobs WHERE job_id=?",
                (job.job_id,),
            ).fetchone()
            if row is None:
                values["quality"] = report.model_dump_json() if report else None
                self._insert(
                    cur,
                    "ingestion_jobs",
                    {"tenant_id": job.tenant_id, "job_id": job.job_id, **values},
                )
                return
            if report is not None:
                values["quality"] = report.model_dump_json()
            sets = ", ".join(f"{k}=?" for k in values)
            self._run(
                cur,
                f"UPDATE ingestion_jobs SET {sets} WHERE tenant_id=? AND job_id=?",
                [*values.values(), job.tenant_id, job.job_id],
            )

    def job(self, tenant: str, job_id: str) -> IngestionJob:
        """Return a tenant's job; `NotFoundError` for another tenant's or an unknown one."""
        with self._tx(tenant) as cur:
            row = self._run(
                cur,
                "SELECT body FROM ingestion_jobs WHERE tenant_id=? AND job_id=?",
                (tenant, job_id),
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown job", job_id=job_id)
        return IngestionJob.model_validate(_doc(row[0]))

    def jobs(
        self, tenant: str, source_id: str | None = None, limit: int = 50
    ) -> list[IngestionJob]:
        """Return a tenant's jobs (of one source, or all), newest first."""
        where, params = "WHERE tenant_id=?", [tenant]
        if source_id is not None:
            where += " AND source_id=?"
            params.append(source_id)
        with self._tx(tenant) as cur:
            rows = self._run(
                cur,
                f"SELECT body FROM ingestion_jobs {where} ORDER BY start_time DESC, job_id LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [IngestionJob.model_validate(_doc(r[0])) for r in rows]

    def report(self, tenant: str, job_id: str) -> DataQualityReport:
        """Return a job's quality report; `NotFoundError` when there is none (yet)."""
        with self._tx(tenant) as cur:
            row = self._run(
                cur,
                "SELECT quality FROM ingestion_jobs WHERE tenant_id=? AND job_id=?",
                (tenant, job_id),
            ).fetchone()
        if row is None or row[0] is None:
            raise NotFoundError("no quality report for this job", job_id=job_id)
        return DataQualityReport.model_validate(_doc(row[0]))

    # -- dead letters ------------------------------------------------------------------------
    def add_dead_letters(
        self, tenant: str, job_id: str, source_id: str, rejected: pl.DataFrame, now: datetime
    ) -> int:
        """Keep rejected records (`record`, `stage`, `reason` columns); return the count."""
        if rejected.is_empty():
            return 0
        at = now.isoformat()
        rows = [
            (tenant, job_id, source_id, record, stage, reason, at)
            for record, stage, reason in rejected.select("record", "stage", "reason").iter_rows()
        ]  # a batch insert: executemany's rows, built by the driver's C loop
        with self._tx(tenant) as cur:
            cur.executemany(
                self._q(
                    "INSERT INTO ingestion_dead_letters (tenant_id, job_id, source_id, record,"
                    " stage, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                rows,
            )
        return len(rows)

    def dead_letters(
        self,
        tenant: str,
        job_id: str | None = None,
        source_id: str | None = None,
        include_replayed: bool = False,
        limit: int = 1_000_000,
    ) -> pl.DataFrame:
        """Return a tenant's dead letters (`DEAD_LETTER_SCHEMA`) in arrival order."""
        where, params = "WHERE tenant_id=?", [tenant]
        if job_id is not None:
            where += " AND job_id=?"
            params.append(job_id)
        if source_id is not None:
            where += " AND source_id=?"
            params.append(source_id)
        if not include_replayed:
            where += " AND replayed_job_id IS NULL"
        with self._tx(tenant) as cur:
            rows = self._run(
                cur,
                "SELECT id, job_id, source_id, record, stage, reason, created_at,"
                f" replayed_job_id FROM ingestion_dead_letters {where} ORDER BY id LIMIT ?",
                [*params, limit],
            ).fetchall()
        fixed = [
            (*r[:6], r[6].isoformat() if isinstance(r[6], datetime) else r[6], r[7]) for r in rows
        ]
        return pl.DataFrame(fixed, schema=DEAD_LETTER_SCHEMA, orient="row")

    def mark_replayed(self, tenant: str, ids: Sequence[int], job_id: str) -> int:
        """Record that dead letters went through again in `job_id`; return how many."""
        if not ids:
            return 0
        with self._tx(tenant) as cur:
            cur.executemany(
                self._q(
                    "UPDATE ingestion_dead_letters SET replayed_job_id=?"
                    " WHERE tenant_id=? AND id=? AND replayed_job_id IS NULL"
                ),
                [(job_id, tenant, int(i)) for i in ids],
            )
        return len(ids)

    # -- lineage -----------------------------------------------------------------------------
    def add_lineage(self, tenant: str, entries: Sequence[dict[str, Any]], now: datetime) -> None:
        """Record what a job read: input_uri, sha256 or offsets/cursor, rows, lake_table."""
        with self._tx(tenant) as cur:
            for entry in entries:  # one row per input file or stream range
                self._insert(
                    cur,
                    "ingestion_lineage",
                    {
                        "tenant_id": tenant,
                        "job_id": entry["job_id"],
                        "source_id": entry["source_id"],
                        "input_uri": entry["input_uri"],
                        "sha256": entry.get("sha256"),
                        "offset_start": entry.get("offset_start"),
                        "offset_end": entry.get("offset_end"),
                        "cursor": json.dumps(entry["cursor"], default=str)
                        if entry.get("cursor") is not None
                        else None,
                        "rows": int(entry.get("rows", 0)),
                        "lake_table": entry.get("lake_table"),
                        "created_at": now.isoformat(),
                    },
                    uuid=False,  # an identity column keeps the order of arrival
                )

    def lineage(self, tenant: str, job_id: str) -> list[dict[str, Any]]:
        """Return what a tenant's job read and wrote, in order."""
        with self._tx(tenant) as cur:
            rows = self._run(
                cur,
                "SELECT job_id, source_id, input_uri, sha256, offset_start, offset_end, cursor,"
                " rows, lake_table FROM ingestion_lineage WHERE tenant_id=? AND job_id=?"
                " ORDER BY id",
                (tenant, job_id),
            ).fetchall()
        keys = ("job_id", "source_id", "input_uri", "sha256", "offset_start", "offset_end",
                "cursor", "rows", "lake_table")  # fmt: skip
        out = []
        for row in rows:
            entry = dict(zip(keys, row, strict=True))
            entry["cursor"] = _doc(entry["cursor"]) if entry["cursor"] else None
            out.append(entry)
        return out

    def close(self) -> None:
        """Release connections (the backend's pool is closed by its owner)."""
