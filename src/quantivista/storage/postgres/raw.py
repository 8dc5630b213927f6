"""Bronze in PostgreSQL: bodies in `raw_payloads` once per (provider, sha256), `raw_manifest`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import polars as pl
from psycopg import sql
from psycopg_pool import ConnectionPool

from quantivista.errors import NotFoundError
from quantivista.model.payloads import RawPayload
from quantivista.model.schema import RAW_MANIFEST_SCHEMA
from quantivista.storage.contracts import check_digest, manifest_row
from quantivista.storage.postgres.db import (
    copy_frame,
    maps_storage_errors,
    read_frame,
    transaction,
    wire_columns,
)

__all__ = ["PgRawStore"]

_BODIES = pl.Schema(
    {"provider": pl.String(), "sha256": pl.String(), "bytes": pl.Int64(), "body": pl.Binary()}
)


@maps_storage_errors
class PgRawStore:
    """The `RawStore` of the PostgreSQL backend.

    A save is one transaction: the bodies are copied into a temporary table and inserted
    where (provider, sha256) is new (`ON CONFLICT DO NOTHING`: a body saved concurrently by
    another process is stored once and counted once), then the manifest rows are copied.
    A manifest row's `path` is the one the lake would use, so both list the same thing.
    """

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def save(self, job_id: str, payloads: Sequence[RawPayload]) -> int:
        """Store the payloads of a job; return how many new bodies were written."""
        if not payloads:
            return 0
        rows: list[dict[str, Any]] = []
        bodies: dict[tuple[str, str], bytes] = {}
        for p in payloads:  # hashing is per payload; there are hundreds, not millions
            digest = hashlib.sha256(p.body).hexdigest()
            bodies.setdefault((p.provider, digest), p.body)
            rows.append(manifest_row(job_id, p, digest))
        manifest = pl.DataFrame(rows, schema=RAW_MANIFEST_SCHEMA)
        stage = pl.DataFrame(
            {
                "provider": [k[0] for k in bodies],
                "sha256": [k[1] for k in bodies],
                "bytes": [len(b) for b in bodies.values()],
                "body": list(bodies.values()),
            },
            schema=_BODIES,
        )
        with transaction(self.pool, "saving raw payloads") as conn:
            conn.execute("CREATE TEMP TABLE qv_raw_stage (LIKE raw_payloads) ON COMMIT DROP")
            copy_frame(conn, "qv_raw_stage", stage)
            written = conn.execute(
                "INSERT INTO raw_payloads SELECT * FROM qv_raw_stage"
                " ORDER BY provider, sha256 ON CONFLICT DO NOTHING"
            ).rowcount
            copy_frame(conn, "raw_manifest", manifest)
        return max(written, 0)

    def manifest(self, job_id: str | None = None) -> pl.DataFrame:
        """Return one row per saved payload (of one job, or all), by job then as saved."""
        query = sql.SQL("SELECT {} FROM raw_manifest {} ORDER BY seq").format(
            wire_columns(RAW_MANIFEST_SCHEMA),
            sql.SQL("WHERE job_id = %s") if job_id else sql.SQL(""),
        )
        with transaction(self.pool, "reading the raw manifest") as conn:
            df = read_frame(conn, query, (job_id,) if job_id else None, RAW_MANIFEST_SCHEMA)
        return df.sort("job_id", maintain_order=True)

    def body(self, sha256: str, provider: str) -> bytes:
        """Return a stored body; `NotFoundError` for an unknown or malformed digest."""
        check_digest(sha256, provider)
        with transaction(self.pool, "reading a raw payload") as conn:
            row = conn.execute(
                "SELECT body FROM raw_payloads WHERE provider = %s AND sha256 = %s",
                (provider, sha256),
            ).fetchone()
        if row is None:
            raise NotFoundError("unknown payload", provider=provider, sha256=sha256)
        return bytes(row[0])
