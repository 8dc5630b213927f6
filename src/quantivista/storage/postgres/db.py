"""What the PostgreSQL stores share: transactions on the pool, frames in and out, versions.

Frames go in by binary COPY (`frame_copy_chunks`: no row loop, no INSERT per row) and come
out by `COPY (SELECT ...) TO STDOUT` as CSV parsed by Polars, timestamps as Unix
microseconds and dates as Unix days, so no text date format is ever parsed. Every store
works in the schema named by the pool's search_path.
"""

from __future__ import annotations

import functools
import inspect
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import polars as pl
import psycopg
from psycopg import Connection, sql
from psycopg.errors import RaiseException
from psycopg_pool import ConnectionPool

from quantivista.errors import StorageError, StorageRejectedError
from quantivista.storage.postgres.copy import frame_copy_chunks

__all__ = [
    "bump_version",
    "copy_frame",
    "listing_filters",
    "lock_version",
    "maps_storage_errors",
    "read_frame",
    "read_version",
    "storage_errors",
    "transaction",
    "where_all",
    "wire_columns",
]


@contextmanager
def transaction(pool: ConnectionPool[Any], what: str) -> Iterator[Connection[Any]]:
    """Run the block in one transaction on a pooled connection.

    A database error becomes `StorageError("<what> failed")` with the server's message
    (`StorageRejectedError` when the server refuses the data itself: writing it again
    fails again); the transaction is rolled back either way.
    """
    with storage_errors(what), pool.connection() as conn, conn.transaction():
        yield conn


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Raise a database error of the block as `StorageError("<what> failed")` (retryable: the
    server away, a lock, a missing table), or `StorageRejectedError` when the server refuses
    the data itself (a value it cannot hold, a broken constraint, a trigger's RAISE EXCEPTION
    such as the append-only guards')."""
    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError, RaiseException) as exc:
        raise StorageRejectedError(f"{what} failed", error=str(exc).strip()) from exc
    except psycopg.Error as exc:
        raise StorageError(f"{what} failed", error=str(exc).strip()) from exc


_Class = TypeVar("_Class", bound=type)


def maps_storage_errors(cls: _Class) -> _Class:
    """Route every public method of a store (its own and inherited, and `__init__`) through
    `storage_errors`, so no psycopg error leaves the store untyped.

    Methods that use `transaction` already raise their own, more specific `StorageError`;
    this catches what runs outside one (the pool's connection, a bare `pool.connection()`).
    Generator methods are refused: the mapping would end before their body runs.
    """
    for name in dir(cls):
        if name.startswith("_") and name != "__init__":
            continue
        method = inspect.getattr_static(cls, name)
        if not inspect.isfunction(method) or getattr(method, "__maps_storage_errors__", False):
            continue
        if inspect.isgeneratorfunction(method):
            raise TypeError(f"{cls.__name__}.{name}: a generator cannot map storage errors")
        setattr(cls, name, _mapped(method, f"{cls.__name__}.{name}"))
    return cls


def _mapped(method: Callable[..., Any], what: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with storage_errors(what):
            return method(*args, **kwargs)

    call.__maps_storage_errors__ = True  # type: ignore[attr-defined]
    return call


def copy_frame(conn: Connection[Any], table: str, df: pl.DataFrame) -> int:
    """Append `df` to `table` by binary COPY (columns by name, in the frame's order)."""
    if df.is_empty():
        return 0
    statement = sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
        t=sql.Identifier(table), c=sql.SQL(", ").join(sql.Identifier(c) for c in df.columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as cp:
        for chunk in frame_copy_chunks(df):
            cp.write(chunk)
    return df.height


def _wire(name: str, dtype: pl.DataType, alias: str | None) -> sql.Composable:
    col = sql.Identifier(alias, name) if alias else sql.Identifier(name)
    if isinstance(dtype, pl.Datetime):
        expr = sql.SQL("(extract(epoch FROM {c}) * 1000000)::int8")
    elif dtype == pl.Date:
        expr = sql.SQL("({c} - date '1970-01-01')")
    elif isinstance(dtype, pl.List) and dtype.inner == pl.Date:
        expr = sql.SQL(
            "array_to_string(ARRAY(SELECT d - date '1970-01-01' FROM unnest({c}) d), ',')"
        )
    elif dtype == pl.Boolean:
        expr = sql.SQL("{c}::int2")
    else:
        return col
    return expr.format(c=col)


def listing_filters(
    symbols: Sequence[str] | None, job_id: str | None
) -> tuple[list[sql.Composable], dict[str, Any]]:
    """Return the conditions (and parameters) of the listings' symbol and batch-job filters.

    None or empty: no condition. Callers add their own and join them with `where_all`.
    """
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if symbols:
        where.append(sql.SQL("symbol = ANY(%(symbols)s)"))
        params["symbols"] = list(symbols)
    if job_id:
        where.append(sql.SQL("batch_job_id = %(job)s"))
        params["job"] = job_id
    return where, params


def where_all(conditions: Sequence[sql.Composable]) -> sql.Composable:
    """Return `WHERE a AND b ...`, or nothing when there are no conditions."""
    if not conditions:
        return sql.SQL("")
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions)


def wire_columns(schema: pl.Schema, alias: str | None = None) -> sql.Composable:
    """Return the select list that `read_frame` parses back into `schema`."""
    return sql.SQL(", ").join(_wire(n, t, alias) for n, t in schema.items())


def _wire_dtype(dtype: pl.DataType) -> pl.DataType:
    if isinstance(dtype, pl.Datetime) or dtype == pl.UInt32 or dtype == pl.UInt64:
        return pl.Int64()
    if dtype == pl.Date:
        return pl.Int32()
    if isinstance(dtype, pl.List):
        return pl.String()
    if dtype == pl.Boolean:
        return pl.Int8()
    return dtype


def _from_wire(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        return pl.from_epoch(col, "us").dt.replace_time_zone(dtype.time_zone).alias(name)
    if isinstance(dtype, pl.List):
        # "" (an empty array) splits into [""]: the failed cast and drop_nulls make it []
        day = pl.element().cast(pl.Int32, strict=False).drop_nulls().cast(pl.Date)
        return col.str.split(",").list.eval(day).alias(name)
    return col.cast(dtype)


def read_frame(
    conn: Connection[Any],
    query: sql.Composable,
    params: Sequence[Any] | dict[str, Any] | None,
    schema: pl.Schema,
) -> pl.DataFrame:
    """Return the rows of `query` (select list from `wire_columns(schema)`) as a frame."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT CSV)").format(query)
    with conn.cursor() as cur, cur.copy(statement, params) as cp:
        data = b"".join(bytes(chunk) for chunk in cp)
    if not data:
        return pl.DataFrame(schema=schema)
    wire = {name: _wire_dtype(dtype) for name, dtype in schema.items()}
    raw = pl.read_csv(io.BytesIO(data), schema=wire, has_header=False)
    return raw.select(_from_wire(name, dtype) for name, dtype in schema.items())


# -- versions: one counter per kind of state, bumped in the transaction of each write -------
def lock_version(conn: Connection[Any], kind: str) -> None:
    """Take `kind`'s writer lock (its version row) until the transaction ends."""
    conn.execute("SELECT version FROM versions WHERE kind = %s FOR UPDATE", (kind,))


def bump_version(conn: Connection[Any], kind: str) -> None:
    """Count one more write of `kind` (readers see it when the transaction commits)."""
    conn.execute("UPDATE versions SET version = version + 1 WHERE kind = %s", (kind,))


def read_version(pool: ConnectionPool[Any], kind: str) -> int:
    """Return how many writes of `kind` have committed."""
    with transaction(pool, f"reading the {kind} version") as conn:
        row = conn.execute("SELECT version FROM versions WHERE kind = %s", (kind,)).fetchone()
    return int(row[0]) if row else 0
