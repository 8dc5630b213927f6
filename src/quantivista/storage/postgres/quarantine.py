"""Quarantine in PostgreSQL: rejected rows in `quarantine_rows`, releases beside them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from quantivista.model.schema import (
    QUARANTINE_POLARS_SCHEMA,
    QUARANTINE_ROW_ID,
    RELEASE_POLARS_SCHEMA,
)
from quantivista.storage.postgres.db import (
    copy_frame,
    listing_filters,
    lock_version,
    maps_storage_errors,
    read_frame,
    transaction,
    where_all,
    wire_columns,
)
from quantivista.storage.quarantine import not_held, stored_frame, with_releases

__all__ = ["PgQuarantineStore"]

ROW_ID = QUARANTINE_ROW_ID
_ROW_ID_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in ROW_ID)


@maps_storage_errors
class PgQuarantineStore:
    """The `QuarantineStore` of the PostgreSQL backend.

    Rows are only ever inserted: a release adds a record to `quarantine_released`, and
    listings hide released rows unless asked for them (as in the lake). Each row keeps the
    job of the batch that rejected it (`batch_job_id`), which `list(job_id=...)` filters by,
    and an arrival number (`seq`) that orders rows quarantined at the same instant.
    """

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def add(self, rejected: pl.DataFrame, *, job_id: str, at: datetime, dedupe: bool = True) -> int:
        """Store rejected rows (canonical columns plus rule, severity, reason); return the count.

        A row equal to a held row in `QUARANTINE_SAME` (the same bad bar, rejected again by
        a re-ingest) is not stored twice, unless `dedupe` is False (a quarantine release
        re-checks rows that are still held until it marks them released). The check and
        the insert are one transaction under the quarantine writer lock.
        """
        if rejected.is_empty():
            return 0
        with transaction(self.pool, "writing quarantined rows") as conn:
            if dedupe:
                lock_version(conn, "quarantine")
                rejected = not_held(rejected, _held(conn, rejected["symbol"].unique().to_list()))
                if rejected.is_empty():
                    return 0
            frame = stored_frame(rejected, job_id, at)
            copy_frame(conn, "quarantine_rows", frame.with_columns(batch_job_id=pl.lit(job_id)))
        return frame.height

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
        where, params = listing_filters(symbols, job_id)
        if rule:
            where.append(sql.SQL("%(rule)s = ANY(string_to_array(rule, ','))"))
            params["rule"] = rule
        with transaction(self.pool, "reading quarantined rows") as conn:
            df = _rows(conn, where, params)
            released = _releases(conn)
        return with_releases(df, released, include_released=include_released)

    def releases(self) -> pl.DataFrame:
        """Return every release record (the first one per row), in the order they were made."""
        with transaction(self.pool, "reading quarantine releases") as conn:
            return _releases(conn)

    def mark_released(self, rows: pl.DataFrame, *, release_job_id: str, at: datetime) -> int:
        """Record that `rows` (quarantine rows) went back through the write path."""
        if rows.is_empty():
            return 0
        frame = rows.select(ROW_ID).with_columns(
            released_at=pl.lit(at, RELEASE_POLARS_SCHEMA["released_at"]),
            release_job_id=pl.lit(release_job_id),
        )
        with transaction(self.pool, "recording quarantine releases") as conn:
            copy_frame(conn, "quarantine_released", frame.cast(RELEASE_POLARS_SCHEMA))
        return frame.height

    def count(self) -> int:
        """Return how many rows are held (released rows not counted)."""
        query = sql.SQL(
            "SELECT (SELECT count(*) FROM quarantine_rows)"
            " - (SELECT count(*) FROM (SELECT DISTINCT {ids} FROM quarantine_released) r)"
        ).format(ids=_ROW_ID_LIST)
        with transaction(self.pool, "counting quarantined rows") as conn:
            row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def _rows(
    conn: Connection[Any], where: list[sql.Composable], params: dict[str, Any]
) -> pl.DataFrame:
    """Return quarantined rows matching `where`, released or not, in the listing order."""
    query = sql.SQL("SELECT {cols} FROM quarantine_rows {where} ORDER BY seq").format(
        cols=wire_columns(QUARANTINE_POLARS_SCHEMA),
        where=where_all(where),
    )
    df = read_frame(conn, query, params, QUARANTINE_POLARS_SCHEMA)
    return df.sort("quarantined_at", "symbol", "ts", maintain_order=True)


def _held(conn: Connection[Any], symbols: list[str]) -> pl.DataFrame:
    """Return the rows of `symbols` still held (not released)."""
    rows = _rows(conn, [sql.SQL("symbol = ANY(%(symbols)s)")], {"symbols": symbols})
    return rows.join(_releases(conn), on=list(ROW_ID), how="anti", nulls_equal=True)


def _releases(conn: Connection[Any]) -> pl.DataFrame:
    query = sql.SQL("SELECT {} FROM quarantine_released ORDER BY seq").format(
        wire_columns(RELEASE_POLARS_SCHEMA)
    )
    df = read_frame(conn, query, None, RELEASE_POLARS_SCHEMA)
    return df.unique(list(ROW_ID), keep="first", maintain_order=True)
