"""Corporate actions in the `actions` table, keyed by symbol, type, ex-date and provider."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import polars as pl
from psycopg import sql
from psycopg_pool import ConnectionPool

from quantivista.model.schema import ACTION_COLUMNS, ACTION_POLARS_SCHEMA
from quantivista.storage.lake.actions import merge_actions, sort_actions
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

__all__ = ["PgActionStore"]

_SELECT = sql.SQL("SELECT {} FROM actions").format(wire_columns(ACTION_POLARS_SCHEMA))


@maps_storage_errors
class PgActionStore:
    """The `ActionStore` of the PostgreSQL backend.

    An upsert is one transaction: it takes the actions writer lock (the `versions` row),
    reads the stored rows of the batch's symbols, merges like the lake (`merge_actions`),
    replaces the changed keys and bumps the version, so two writers in any processes never
    lose each other's rows and readers see all of a batch or none of it.
    """

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def all(self) -> pl.DataFrame:
        """Return every stored action, sorted by symbol, ex-date, type and provider."""
        with transaction(self.pool, "reading corporate actions") as conn:
            return sort_actions(read_frame(conn, _SELECT, None, ACTION_POLARS_SCHEMA))

    def upsert(self, actions: pl.DataFrame) -> pl.DataFrame:
        """Insert new actions, replace changed ones; return the rows that were new or changed."""
        if actions.is_empty():
            return actions
        actions = actions.select(ACTION_COLUMNS)
        symbols = actions["symbol"].unique().to_list()
        with transaction(self.pool, "writing corporate actions") as conn:
            lock_version(conn, "actions")
            current = read_frame(
                conn,
                sql.SQL("{} WHERE symbol = ANY(%s)").format(_SELECT),
                (symbols,),
                ACTION_POLARS_SCHEMA,
            )
            _, fresh = merge_actions(current, actions)
            if fresh.height:
                keys = fresh.select("symbol", "action_type", "ex_date", "provider")
                conn.execute(
                    "DELETE FROM actions a USING unnest(%s::text[], %s::text[], %s::date[],"
                    " %s::text[]) AS k(symbol, action_type, ex_date, provider)"
                    " WHERE a.symbol = k.symbol AND a.action_type = k.action_type"
                    " AND a.ex_date = k.ex_date AND a.provider IS NOT DISTINCT FROM k.provider",
                    [keys[c].to_list() for c in keys.columns],
                )
                copy_frame(conn, "actions", fresh)
                bump_version(conn, "actions")
        return fresh

    def for_symbols(self, symbols: Sequence[str] | None) -> pl.DataFrame:
        """Return actions naming some symbols (as symbol or new_symbol; None: all) by ex-date."""
        if not symbols:
            df = self.all()
        else:
            wanted = list(symbols)
            with transaction(self.pool, "reading corporate actions") as conn:
                found = read_frame(
                    conn,
                    sql.SQL("{} WHERE symbol = ANY(%s) OR new_symbol = ANY(%s)").format(_SELECT),
                    (wanted, wanted),
                    ACTION_POLARS_SCHEMA,
                )
            df = sort_actions(found)
        return df.sort("ex_date", "symbol", maintain_order=True)

    def version(self) -> Hashable:
        """Return the count of committed action writes (any process)."""
        return read_version(self.pool, "actions")
