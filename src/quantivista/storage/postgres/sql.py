"""SQL over the PostgreSQL backend: `qv sql` when the platform keeps its state there.

The relations `bars`, `actions` and `quarantine` have the columns of the lake's DuckDB views
(`storage/lake/sql.py`); every other table of the schema can be queried too (`jobs`,
`quality_scores_daily`, ...). The query runs in PostgreSQL's own dialect.

Guards: one statement only (sent with the extended protocol, which refuses a second), and
unless `allow_writes` it must read (SELECT, WITH, VALUES, TABLE, EXPLAIN or SHOW: no COPY to
a server file) and runs in a READ ONLY transaction that is rolled back; always with a
statement timeout. These keep
mistakes harmless; a user who must not reach server functions needs a role without them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from quantivista.errors import InvalidInputError
from quantivista.storage.postgres.bars import PostgresStore

__all__ = ["sql_query"]

_READS = ("select", "with", "values", "table", "explain", "show")
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)

# result column types by PostgreSQL type OID, so that empty and all-NULL columns keep a type
_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(), 17: pl.Binary(), 18: pl.String(), 19: pl.String(), 20: pl.Int64(),
    21: pl.Int16(), 23: pl.Int32(), 25: pl.String(), 114: pl.String(), 700: pl.Float32(),
    701: pl.Float64(), 1042: pl.String(), 1043: pl.String(), 1082: pl.Date(),
    1114: pl.Datetime("us"), 1184: pl.Datetime("us", "UTC"), 1186: pl.Duration("us"),
    2950: pl.String(), 3802: pl.String(),
}  # fmt: skip


def _first_word(query: str) -> str:
    rest = query[_LEADING.match(query).end() :]  # type: ignore[union-attr]
    word = re.match(r"[A-Za-z]+", rest)
    return word.group(0).lower() if word else ""


def _column(name: str, values: list[Any], oid: int) -> pl.Series:
    dtype = _TYPES.get(oid)
    try:
        return pl.Series(name, values, dtype=dtype, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError):  # a type polars cannot hold
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)


def _as_text(data: str | bytes) -> str:
    return data if isinstance(data, str) else bytes(data).decode()


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count}")
    return out


def sql_query(
    pool_or_store: ConnectionPool[Any] | PostgresStore,
    query: str,
    *,
    allow_writes: bool = False,
    timeout_s: float = 60.0,
) -> pl.DataFrame:
    """Run one SQL statement in the backend's schema; return its result as a frame.

    Read-only (and rolled back) unless `allow_writes`, which runs any one statement and
    commits it. Errors (syntax, unknown relation, timeout, a write) become
    `InvalidInputError` with the database's message.
    """
    if isinstance(pool_or_store, PostgresStore):
        pool, schema = pool_or_store.pool, pool_or_store.schema
    else:
        pool, schema = pool_or_store, None
    if not allow_writes and _first_word(query) not in _READS:
        raise InvalidInputError(
            "SQL failed: only one reading statement (SELECT, WITH, VALUES, TABLE, EXPLAIN,"
            " SHOW) is allowed without allow_writes",
            query=query[:200],
        )
    try:
        with pool.connection() as conn:
            try:
                if not allow_writes:
                    conn.execute("SET TRANSACTION READ ONLY")  # first in psycopg's transaction
                if schema is None:
                    row = conn.execute("SELECT current_schema()").fetchone()
                    schema = str(row[0]) if row and row[0] else "public"
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                timeout_ms = int(timedelta(seconds=timeout_s).total_seconds() * 1000)
                conn.execute(
                    sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms))
                )
                with conn.cursor(binary=True) as cur:  # binary: the extended protocol
                    set_json_loads(_as_text, cur)  # JSON as text, as DuckDB gives it
                    cur.execute(query)
                    if cur.description is None:  # a statement without rows
                        if allow_writes:
                            conn.commit()
                        return pl.DataFrame()
                    names = _unique([d.name for d in cur.description])
                    oids = [d.type_code for d in cur.description]
                    rows = cur.fetchall()
                if allow_writes:
                    conn.commit()
            finally:
                conn.rollback()  # a no-op after the commit
    except psycopg.Error as exc:
        message = str(exc).strip()
        raise InvalidInputError(f"SQL failed: {message}", query=query[:200]) from exc
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pl.DataFrame(
        [_column(n, list(v), o) for n, v, o in zip(names, columns, oids, strict=True)]
    )
