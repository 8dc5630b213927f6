"""SQL over the embedded lake with DuckDB: views `bars`, `actions` and `quarantine`, and
the reporting data lake's tables that hold rows (`portfolio_data_lake`, `execution_data_lake`,
...; partition folders are columns there).

With a cold tier configured (`storage.archive_url`), `bars` spans both tiers: the cold files
come from the cold index (the archive is not listed); a local archive is read by path, any
other fsspec filesystem is registered with DuckDB. A bar in both tiers (an interrupted
archival) appears once, the hot copy winning, as in `ParquetLake.read`. Hot base files in
Arrow IPC (`storage.daily_format`) are registered with DuckDB as one pyarrow dataset.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds

from quantivista.config import StorageSettings
from quantivista.errors import InvalidInputError
from quantivista.model.schema import (
    ACTION_POLARS_SCHEMA,
    BAR_POLARS_SCHEMA,
    QUARANTINE_POLARS_SCHEMA,
)
from quantivista.storage.lake.layout import bar_base_files
from quantivista.storage.lake.workflow_lake import WorkflowLake

__all__ = ["lake_connection", "sql_query"]

_DUCK_TYPES = {
    pl.String: "VARCHAR",
    pl.Float64: "DOUBLE",
    pl.Int64: "BIGINT",
    pl.UInt32: "UINTEGER",
    pl.Date: "DATE",
}


def _empty_view(schema: pl.Schema) -> str:
    cols = []
    for name, dtype in schema.items():
        duck = "TIMESTAMPTZ" if isinstance(dtype, pl.Datetime) else _DUCK_TYPES[type(dtype)]
        cols.append(f"NULL::{duck} AS {name}")
    return f"SELECT {', '.join(cols)} WHERE false"


def _scan(files: list[Path] | list[str]) -> str:
    listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    # the folder names (timeframe=, bucket=, job_id=) are layout, not columns: DuckDB would
    # add `bucket` and let the folder's job_id replace a quarantined row's own
    return f"read_parquet([{listing}], union_by_name = true, hive_partitioning = false)"


def _hot(con: duckdb.DuckDBPyConnection, files: list[Path], name: str) -> str:
    """Return a query of hot files (Parquet, and Arrow IPC base files registered as the
    dataset `name`)."""
    arrow = [str(f) for f in files if f.suffix == ".arrow"]
    parquet = [f for f in files if f.suffix != ".arrow"]
    parts = [f"SELECT * FROM {_scan(parquet)}"] if parquet else []
    if arrow:
        con.register(name, ds.dataset(arrow, format="ipc"))
        parts.append(f"SELECT * FROM {name}")
    return " UNION ALL BY NAME ".join(parts)


def _view(con: duckdb.DuckDBPyConnection, name: str, files: list[Path], schema: pl.Schema) -> None:
    source = f"SELECT * FROM {_scan(files)}" if files else _empty_view(schema)
    con.execute(f"CREATE VIEW {name} AS {source}")


def _bars_view(con: duckdb.DuckDBPyConnection, root: Path, storage: StorageSettings | None) -> None:
    bars_root = root / "silver" / "bars"
    lake = None
    if (bars_root / "_layout.json").exists():
        from quantivista.storage.lake.bars import ParquetLake

        lake = ParquetLake(root, storage)
    # hot files listed before the cold index is read: see `ParquetLake.read`; listed as the
    # lake lists them (one base a partition), not by globbing names
    hot = bar_base_files(bars_root)
    # deltas as the lake's readers list them (a merge's or a fold's crash-left files once),
    # handed over as rows: a delta file can hold rows that no longer count
    deltas = lake.live_deltas() if lake is not None else []
    hot_rows = f"({_hot(con, hot, '_hot_bars')})" if hot else None
    if deltas:
        con.register("_qv_deltas", pl.concat([rows for _, rows in deltas]).to_arrow())
        hot_rows = (
            f"(SELECT * FROM {hot_rows} UNION ALL BY NAME SELECT * FROM _qv_deltas)"
            if hot_rows
            else "_qv_deltas"
        )
    cold: list[str] = []
    overlap: list[Path] = []
    if lake is not None and storage is not None and storage.archive_url:
        assert lake.cold is not None and lake.cold_index is not None
        entries = lake.cold_index.entries()
        if entries and not lake.cold.is_local:
            con.register_filesystem(lake.cold.fs)
        cold = [lake.cold.location(e.rel) for e in entries]
        # a bar can be in both tiers only in a hot base file of a cold one's partition
        cold_dirs = {(root / e.rel).parent for e in entries}
        overlap = [p for p in hot if p.parent in cold_dirs]
    if not cold:
        source = f"SELECT * FROM {hot_rows}" if hot_rows else _empty_view(BAR_POLARS_SCHEMA)
        con.execute(f"CREATE VIEW bars AS {source}")
        return
    cold_rows = f"SELECT * FROM {_scan(cold)} AS c"
    if overlap:
        cold_rows += (
            f" WHERE NOT EXISTS (SELECT 1 FROM ({_hot(con, overlap, '_hot_overlap')}) AS h"
            " WHERE h.symbol = c.symbol AND h.timeframe = c.timeframe AND h.ts = c.ts)"
        )
    source = f"SELECT * FROM {hot_rows} UNION ALL BY NAME {cold_rows}" if hot_rows else cold_rows
    con.execute(f"CREATE VIEW bars AS {source}")


def lake_connection(
    root: Path, storage: StorageSettings | None = None
) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with views over the lake at `root`.

    With `storage.archive_url` set, the view `bars` spans the hot and the cold tier.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    root = Path(root)
    _bars_view(con, root, storage)
    actions = root / "silver" / "actions" / "data.parquet"
    _view(con, "actions", [actions] if actions.exists() else [], ACTION_POLARS_SCHEMA)
    quarantine = sorted((root / "quarantine" / "bars").glob("**/*.parquet"))
    _view(con, "quarantine", quarantine, QUARANTINE_POLARS_SCHEMA)
    for table, files in WorkflowLake(root).sources().items():
        listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{listing}],"
            " hive_partitioning = true, union_by_name = true)"
        )
    return con


_READ_ONLY = {"SELECT", "EXPLAIN"}


def sql_query(
    root: Path, query: str, storage: StorageSettings | None = None, *, allow_writes: bool = False
) -> pl.DataFrame:
    """Run SQL over the lake and return the last statement's result as a Polars frame.

    Only queries (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN) run unless `allow_writes`: COPY,
    EXPORT, ATTACH, INSTALL and the like could write files. With `storage.archive_url`
    set, the view `bars` spans the hot and the cold tier.
    """
    con = lake_connection(root, storage)
    try:
        if not allow_writes:
            kinds = {s.type.name for s in con.extract_statements(query)}
            if not kinds <= _READ_ONLY:
                raise InvalidInputError(
                    "qv sql runs read-only queries; pass --allow-writes for "
                    + ", ".join(sorted(kinds - _READ_ONLY)),
                )
        relation = con.sql(query)
        if relation is None:  # a statement without a result
            return pl.DataFrame()
        out = pl.from_arrow(relation.to_arrow_table())
        assert isinstance(out, pl.DataFrame)
        return out
    except duckdb.Error as exc:
        raise InvalidInputError(f"SQL failed: {exc}") from exc
    finally:
        con.close()
