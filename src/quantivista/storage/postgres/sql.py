"""`qv sql` on the PostgreSQL backend: one read-only query in the backend's schema."""

from __future__ import annotations

import polars as pl
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from quantivista.errors import InvalidInputError
from quantivista.storage.postgres.bars import PostgresStore

__all__ = ["sql_query"]

_TIMEOUT_MS = 60_000


def sql_query(store: PostgresStore, query: str, *, allow_writes: bool = False) -> pl.DataFrame:
    """Run `query` with the store's schema on the search path, READ ONLY unless asked."""
    with store.pool.connection() as conn:
        try:
            with conn.transaction():
                if not allow_writes:
                    conn.execute("SET TRANSACTION READ ONLY")
                conn.execute(
                    pg_sql.SQL("SET LOCAL search_path TO {}").format(
                        pg_sql.Identifier(store.schema)
                    )
                )
                conn.execute(f"SET LOCAL statement_timeout = {_TIMEOUT_MS}")
                cur = conn.execute(query.encode())
                if cur.description is None:
                    return pl.DataFrame()
                names = [c.name for c in cur.description]
                rows = cur.fetchall()
        except pg_errors.Error as exc:
            raise InvalidInputError(f"SQL failed: {exc}") from exc
    return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
