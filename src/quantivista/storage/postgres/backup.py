"""Backup and restore of the PostgreSQL backend: every table of its schema, for `backup`.

Dump: every table of the schema (bars with their partitions, bar history, actions,
quarantine, scores, bronze, instruments, the job catalog; not the migration bookkeeping
`alembic_version`, `qv_meta` and `versions`) is copied out as binary COPY inside one
REPEATABLE READ READ ONLY transaction. That is one MVCC snapshot, and every write commits
all it changes in one transaction (bars with the versions they replace, a job with its
tasks' leases), so the copies agree. SERIALIZABLE READ ONLY DEFERRABLE would only add a
wait: the writers run READ COMMITTED, there is no serializable anomaly to avoid.

Why COPY through psycopg and not pg_dump: no client binary whose version must match the
server, the rows can go back into a schema of another name, the tables come from our own
migrations (restore runs them up to the backup's revision, loads, then upgrades to the
newest), and each table is one file, checksummed by the manifest like every lake file.
The files are zstd-compressed binary COPY streams (`*.pgcopy.zst`).

Restore: into a schema whose tables are all empty only; the migrations run first, then
every table is loaded in one transaction holding an exclusive lock on all of them, so a
failed load leaves the schema empty and the restore can simply run again. The identity
counters (arrival numbers, ids) then continue after the restored rows, and every
`versions` counter is bumped so that caches keyed by it notice the new contents.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quantivista.errors import StorageError, StorageRejectedError, StorageUsageError

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["PG_DIR", "check_target", "dump", "load"]

PG_DIR = "postgres"
# migration bookkeeping: the migrations recreate it, restoring it would collide
_NOT_DUMPED = ("alembic_version", "qv_meta", "versions")
_SUFFIX = ".pgcopy.zst"
_BLOCK = 4 << 20  # COPY sends one message per row: hand the compressor 4 MiB at a time


def _connect(dsn: str) -> Connection[Any]:
    import psycopg

    try:
        return psycopg.connect(dsn, options="-c timezone=UTC")
    except psycopg.Error as exc:
        raise StorageError("cannot connect to PostgreSQL", error=str(exc)) from exc


def _use_schema(conn: Connection[Any], schema: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))


def _years(conn: Connection[Any], layout: str) -> list[int]:
    """Return the years `bars` holds: its partitions, or (hypertable) the years of its rows."""
    if layout == "partitioned":
        from quantivista.storage.postgres.bars import partition_years

        return sorted(partition_years(conn))
    rows = conn.execute("SELECT DISTINCT extract(year FROM ts)::int4 FROM bars").fetchall()
    return sorted(int(r[0]) for r in rows)


def backend_tables(conn: Connection[Any]) -> list[str]:
    """Return the tables of the schema on the search_path that a backup holds, sorted.

    Partitioned tables count once (their partitions are copied through them).
    """
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace"
        " AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND c.relname <> ALL(%s) ORDER BY 1",
        (list(_NOT_DUMPED),),
    ).fetchall()
    return [str(r[0]) for r in rows]


def dump(dsn: str, schema: str, dest: Path) -> dict[str, Any]:
    """Copy every table of `schema` into `dest/postgres`, all from one snapshot.

    Return what restore needs: the migration revision, the layout, the years of `bars`,
    and per table its file, columns and rows.
    """
    from psycopg import IsolationLevel, sql

    from quantivista.storage.postgres.bars import table_columns

    folder = Path(dest) / PG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    conn = _connect(dsn)
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn, conn.transaction():
            _use_schema(conn, schema)
            found = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
            if found is None or found[0] is None:
                raise StorageUsageError(
                    "no migrated PostgreSQL bar store to back up", schema=schema
                )
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            layout = conn.execute("SELECT value FROM qv_meta WHERE key = 'bars_layout'").fetchone()
            meta: dict[str, Any] = {
                "schema": schema,
                "revision": str(revision[0]) if revision else None,
                "layout": str(layout[0]) if layout else "partitioned",
                "tables": {},
            }
            meta["years"] = _years(conn, meta["layout"])
            for table in backend_tables(conn):
                columns = table_columns(conn, table)
                query = sql.SQL("COPY (SELECT {c} FROM {t}) TO STDOUT (FORMAT BINARY)").format(
                    c=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                    t=sql.Identifier(table),
                )
                rel = f"{PG_DIR}/{table}{_SUFFIX}"
                rows = _copy_out(conn, query, folder / f"{table}{_SUFFIX}")
                meta["tables"][table] = {"file": rel, "columns": columns, "rows": rows}
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError("PostgreSQL backup failed", schema=schema, error=str(exc)) from exc
    return meta


def _copy_out(conn: Connection[Any], query: Any, path: Path) -> int:
    """Stream one COPY TO into a zstd file, compressing in a thread; return the rows."""
    out = pa.CompressedOutputStream(str(path), "zstd")
    pending: Future[Any] | None = None
    with conn.cursor() as cur, ThreadPoolExecutor(1, thread_name_prefix="qv-pgdump") as pool:
        try:
            buf = bytearray()
            with cur.copy(query) as cp:
                for chunk in cp:
                    buf += chunk
                    if len(buf) >= _BLOCK:
                        if pending is not None:
                            pending.result()
                        pending = pool.submit(out.write, buf)
                        buf = bytearray()
            if pending is not None:
                pending.result()
            out.write(buf)
        finally:
            out.close()
        return cur.rowcount


def check_target(dsn: str, schema: str, meta: dict[str, Any]) -> None:
    """Refuse a target `schema` that holds any row, or sits at another migration."""
    from quantivista.storage.postgres.bars import known_revision
    from quantivista.storage.postgres.db import storage_errors

    revision = meta.get("revision")
    if not revision or not known_revision(str(revision)):
        raise StorageUsageError(
            "the backup's PostgreSQL migration is unknown to this version", revision=revision
        )
    with storage_errors("checking the restore target"), _connect(dsn) as conn, conn.transaction():
        _use_schema(conn, schema)
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        if found is not None:
            _refuse_rows(conn, schema, backend_tables(conn))
        found = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
        if found is not None and found[0] is not None:
            current = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if current is not None and str(current[0]) != revision:
                raise StorageUsageError(
                    "restore target schema is at another migration than the backup",
                    schema=schema,
                    target=str(current[0]),
                    backup=revision,
                )


def load(dsn: str, schema: str, src: Path, meta: dict[str, Any]) -> dict[str, int]:
    """Load the tables dumped in `meta` from `src` into the empty `schema`; return rows per table.

    Call `check_target` first (before touching anything else); this checks again under the lock.
    """
    from psycopg import sql

    from quantivista.storage.postgres.bars import create_year_partitions, migrate
    from quantivista.storage.postgres.opslog import create_tables

    tables = list(meta["tables"])
    try:
        migrate(dsn, schema, str(meta["revision"]))
    except Exception as exc:
        raise StorageError("cannot migrate the restore target", schema=schema) from exc
    loaded: dict[str, int] = {}
    try:
        with _connect(dsn) as conn, conn.transaction():
            _use_schema(conn, schema)
            create_tables(conn)  # the operations log lives outside the migrations
            every = backend_tables(conn)
            conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in every)
                )
            )
            _refuse_rows(conn, schema, every)
            layout = conn.execute("SELECT value FROM qv_meta WHERE key = 'bars_layout'").fetchone()
            if layout is None or layout[0] == "partitioned":
                create_year_partitions(conn, schema, meta.get("years", []))
            for table in tables:
                info = meta["tables"][table]
                query = sql.SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(
                    t=sql.Identifier(table),
                    c=sql.SQL(", ").join(sql.Identifier(c) for c in info["columns"]),
                )
                loaded[table] = _copy_in(conn, query, Path(src) / info["file"])
                if loaded[table] != info["rows"]:
                    raise StorageRejectedError(
                        "restored rows differ from the backup's count",
                        table=table,
                        rows=loaded[table],
                        expected=info["rows"],
                    )
            _continue_identities(conn, tables)
            found = conn.execute("SELECT to_regclass('versions')").fetchone()
            if found is not None and found[0] is not None:  # revision 0002 and later
                conn.execute("UPDATE versions SET version = version + 1")
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError("PostgreSQL restore failed", schema=schema, error=str(exc)) from exc
    try:
        migrate(dsn, schema)  # a backup of an older revision: upgrade it like any store
    except Exception as exc:
        raise StorageError("cannot upgrade the restored schema", schema=schema) from exc
    return loaded


def _refuse_rows(conn: Connection[Any], schema: str, tables: list[str]) -> None:
    """Raise `StorageError` if any of `tables` holds a row."""
    from psycopg import sql

    for table in tables:
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
        ).fetchone()
        if row is not None and row[0]:
            raise StorageUsageError(
                "restore target schema is not empty", schema=schema, table=table
            )


def _continue_identities(conn: Connection[Any], tables: list[str]) -> None:
    """Set each identity counter of `tables` past the largest restored value."""
    from psycopg import sql

    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace AND a.attidentity <> ''"
        " AND NOT a.attisdropped AND c.relname = ANY(%s)",
        (tables,),
    ).fetchall()
    for table, column in rows:
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({c}), 0) + 1, false)"
                " FROM {t}"
            ).format(c=sql.Identifier(column), t=sql.Identifier(table)),
            (sql.Identifier(table).as_string(conn), column),
        )


def _copy_in(conn: Connection[Any], query: Any, path: Path) -> int:
    """Stream one zstd COPY file into COPY FROM, reading ahead in a thread; return the rows."""
    with (
        pa.input_stream(str(path), compression="zstd") as stream,
        conn.cursor() as cur,
        ThreadPoolExecutor(1, thread_name_prefix="qv-pgload") as pool,
    ):
        with cur.copy(query) as cp:
            pending = pool.submit(stream.read, _BLOCK)
            while data := pending.result():
                pending = pool.submit(stream.read, _BLOCK)
                cp.write(data)
        return cur.rowcount
