"""The embedded operations log: the audit trail and SLA samples in `DATA_DIR/ops.sqlite`.

Append-only by construction: triggers refuse every UPDATE and DELETE of either table, so
even a SQL session opened by hand cannot rewrite history (only deleting the file can).

Durability follows the lake's (`storage.fsync`): with it, every commit is fsynced
(`synchronous=FULL`); without it (the default) commits go to the WAL without an fsync
(`synchronous=NORMAL`, as the catalog): a killed process loses no record, a power loss or
OS crash can lose the last moments' records, as it can the bar files written then without
fsync. The pipeline's records (stored and quarantined bars) can be told again from what
survived: each bar and quarantined row carries its job id, and the catalog its report.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from quantivista.errors import StorageError, StorageRejectedError
from quantivista.storage.lake.sqlitedb import open_writable, transaction

__all__ = ["AUDIT_SCHEMA", "SLA_SCHEMA", "SqliteOpsLog"]

AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "seq": pl.Int64(), "at": pl.Datetime("us", "UTC"), "actor": pl.String(),
    "tenant": pl.String(), "action": pl.String(), "target": pl.String(), "outcome": pl.String(),
    "details": pl.String(),
}  # fmt: skip
SLA_SCHEMA: dict[str, pl.DataType] = {
    "at": pl.Datetime("us", "UTC"), "probe": pl.String(), "ok": pl.Boolean(),
    "latency_s": pl.Float64(), "detail": pl.String(),
}  # fmt: skip

_DDL = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at_us INTEGER NOT NULL, actor TEXT NOT NULL,
    tenant TEXT, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at_us);
CREATE TABLE IF NOT EXISTS sla_samples (
    at_us INTEGER NOT NULL, probe TEXT NOT NULL, ok INTEGER NOT NULL, latency_s REAL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sla_samples_at ON sla_samples(at_us);
"""
_GUARDS = [
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
    for table in ("audit_log", "sla_samples")
    for verb in ("update", "delete")
]


def _us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


class SqliteOpsLog:
    """Audit records and SLA samples of the embedded store."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync  # see the module docstring
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @property
    def _conn(self) -> sqlite3.Connection:
        """Open on first use: a read-only command on a read-only store never creates it."""
        with self._lock:
            if self._db is None:
                # an fsync per record costs more than the record: only as the lake's files
                sync: Literal["NORMAL", "FULL"] = "FULL" if self.fsync else "NORMAL"
                try:
                    self._db = open_writable(self.path, _DDL + "\n".join(_GUARDS), sync)
                except sqlite3.Error as exc:
                    raise StorageError(
                        "cannot open the operations log", path=str(self.path), error=str(exc)
                    ) from exc
            return self._db

    def _insert(self, sql: str, row: tuple[object, ...]) -> None:
        """Append one row in its own write transaction (a background checkpoint follows)."""
        conn = self._conn
        with transaction(conn, self._lock, "BEGIN IMMEDIATE", "cannot append", self.path):
            conn.execute(sql, row)

    def add_audit(
        self, at: datetime, actor: str, tenant: str | None, action: str, target: str,
        outcome: str, details: dict[str, Any],
    ) -> None:  # fmt: skip
        """Append one audit record."""
        self._insert(
            "INSERT INTO audit_log (at_us, actor, tenant, action, target, outcome, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_us(at), actor, tenant, action, target, outcome, json.dumps(details, default=str)),
        )

    def audit(
        self, since: datetime | None = None, until: datetime | None = None, *,
        actor: str | None = None, tenant: str | None = None, action: str | None = None,
        limit: int = 1000,
    ) -> pl.DataFrame:  # fmt: skip
        """Return audit records, oldest first, filtered."""
        where: list[str] = ["1=1"]
        args: list[object] = []
        for column, value in (("actor", actor), ("tenant", tenant), ("action", action)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("at_us >= ?")
            args.append(_us(since))
        if until is not None:
            where.append("at_us < ?")
            args.append(_us(until))
        sql = (
            "SELECT seq, at_us, actor, tenant, action, target, outcome, details FROM audit_log"
            f" WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        frame = pl.DataFrame(
            rows, schema={**AUDIT_SCHEMA, "at": pl.Int64()}, orient="row"
        ).with_columns(pl.from_epoch("at", "us").dt.replace_time_zone("UTC"))
        return frame.sort("seq")

    def add_sla(
        self, at: datetime, probe: str, ok: bool, latency_s: float | None, detail: str = ""
    ) -> None:
        """Append one SLA sample (a probe of a service)."""
        self._insert(
            "INSERT INTO sla_samples (at_us, probe, ok, latency_s, detail) VALUES (?,?,?,?,?)",
            (_us(at), probe, int(ok), latency_s, detail),
        )

    def sla(self, since: datetime, until: datetime) -> pl.DataFrame:
        """Return SLA samples in [since, until), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT at_us, probe, ok, latency_s, detail FROM sla_samples"
                " WHERE at_us >= ? AND at_us < ? ORDER BY at_us",
                (_us(since), _us(until)),
            ).fetchall()
        return pl.DataFrame(
            rows, schema={**SLA_SCHEMA, "at": pl.Int64(), "ok": pl.Int64()}, orient="row"
        ).with_columns(
            pl.from_epoch("at", "us").dt.replace_time_zone("UTC"), pl.col("ok").cast(pl.Boolean)
        )

    def execute(self, sql: str) -> None:
        """Run one statement (tests use it to prove the tables refuse rewrites)."""
        try:
            with self._lock:
                self._conn.execute(sql)
        except sqlite3.IntegrityError as exc:  # the append-only triggers' RAISE(ABORT)
            raise StorageRejectedError(
                "the operations log refused the statement", error=str(exc)
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise StorageError("the operations log statement failed", error=str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
