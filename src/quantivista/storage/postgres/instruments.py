"""The instrument master in PostgreSQL: `instruments` (by id) and `symbol_history`."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import polars as pl
from psycopg import sql
from psycopg_pool import ConnectionPool

from quantivista.model.instruments import HISTORY_SCHEMA, INSTRUMENT_SCHEMA
from quantivista.storage.postgres.db import (
    bump_version,
    copy_frame,
    lock_version,
    maps_storage_errors,
    read_frame,
    read_version,
    transaction,
    wire_columns,
)

__all__ = ["PgInstrumentStore"]


@maps_storage_errors
class PgInstrumentStore:
    """The `InstrumentStore` of the PostgreSQL backend.

    A merge is one transaction under the instruments writer lock (the `versions` row):
    replace the given instruments by id, replace the history of the ids in `history`, bump
    the version. Readers see the merge whole or not at all.
    """

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def instruments(self) -> pl.DataFrame:
        """Return every instrument (`INSTRUMENT_SCHEMA`), by id."""
        query = sql.SQL("SELECT {} FROM instruments").format(wire_columns(INSTRUMENT_SCHEMA))
        with transaction(self.pool, "reading instruments") as conn:
            df = read_frame(conn, query, None, INSTRUMENT_SCHEMA)
        return df.sort("instrument_id")

    def symbol_history(self) -> pl.DataFrame:
        """Return every ticker interval (`HISTORY_SCHEMA`), by symbol and start."""
        query = sql.SQL("SELECT {} FROM symbol_history").format(wire_columns(HISTORY_SCHEMA))
        with transaction(self.pool, "reading the symbol history") as conn:
            df = read_frame(conn, query, None, HISTORY_SCHEMA)
        return df.sort("symbol", "valid_from", nulls_last=False)

    def merge(self, instruments: pl.DataFrame, history: pl.DataFrame) -> None:
        """Replace instruments by id and the ticker history of the ids in `history`, atomically."""
        new = instruments.select(INSTRUMENT_SCHEMA.names()).cast(INSTRUMENT_SCHEMA)
        new = new.unique("instrument_id", keep="last", maintain_order=True)
        hist = history.select(HISTORY_SCHEMA.names()).cast(HISTORY_SCHEMA)
        with transaction(self.pool, "merging instruments") as conn:
            lock_version(conn, "instruments")
            conn.execute(
                "DELETE FROM instruments WHERE instrument_id = ANY(%s)",
                (new["instrument_id"].to_list(),),
            )
            copy_frame(conn, "instruments", new)
            if hist.height:
                conn.execute(
                    "DELETE FROM symbol_history WHERE instrument_id = ANY(%s)",
                    (hist["instrument_id"].unique().to_list(),),
                )
                copy_frame(conn, "symbol_history", hist)
            bump_version(conn, "instruments")

    def version(self) -> Hashable:
        """Return the count of committed instrument merges (any process)."""
        return read_version(self.pool, "instruments")
