"""SQL over the embedded lake with DuckDB: views `bars`, `actions` and `quarantine`."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from quantivista.errors import InvalidInputError
from quantivista.model.schema import (
    ACTION_POLARS_SCHEMA,
    BAR_POLARS_SCHEMA,
    QUARANTINE_POLARS_SCHEMA,
)

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


def _view(con: duckdb.DuckDBPyConnection, name: str, files: list[Path], schema: pl.Schema) -> None:
    if files:
        listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        source = f"SELECT * FROM read_parquet([{listing}], union_by_name = true)"
    else:
        source = _empty_view(schema)
    con.execute(f"CREATE VIEW {name} AS {source}")


def lake_connection(root: Path) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with views over the lake at `root`."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    root = Path(root)
    _view(
        con, "bars", sorted((root / "silver" / "bars").glob("**/data.parquet")), BAR_POLARS_SCHEMA
    )
    actions = root / "silver" / "actions" / "data.parquet"
    _view(con, "actions", [actions] if actions.exists() else [], ACTION_POLARS_SCHEMA)
    quarantine = sorted((root / "quarantine" / "bars").glob("**/*.parquet"))
    _view(con, "quarantine", quarantine, QUARANTINE_POLARS_SCHEMA)
    return con


def sql_query(root: Path, query: str) -> pl.DataFrame:
    """Run one SQL query over the lake and return the result as a Polars frame."""
    con = lake_connection(root)
    try:
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
