"""Corporate-action events stored once, keyed by (symbol, action_type, ex_date, provider)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.schema import ACTION_POLARS_SCHEMA
from quantivista.storage.lake import atomic_write_parquet

__all__ = ["ActionStore"]

_KEY = ["symbol", "action_type", "ex_date", "provider"]


class ActionStore:
    """All corporate actions in one sorted Parquet file (thousands of rows, not millions)."""

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.path = Path(root) / "silver" / "actions" / "data.parquet"
        self.settings = settings or StorageSettings()

    def all(self) -> pl.DataFrame:
        """Return every stored action."""
        if not self.path.exists():
            return pl.DataFrame(schema=ACTION_POLARS_SCHEMA)
        return pl.read_parquet(self.path)

    def upsert(self, actions: pl.DataFrame) -> pl.DataFrame:
        """Insert new actions, replace changed ones; return the rows that were new or changed."""
        if actions.is_empty():
            return actions
        current = self.all()
        incoming = actions.unique(subset=_KEY, keep="last", maintain_order=True)
        fresh = incoming.join(
            current, on=list(ACTION_POLARS_SCHEMA.names()), how="anti", nulls_equal=True
        )
        if fresh.is_empty():
            return fresh
        merged = pl.concat(
            [current.join(fresh.select(_KEY), on=_KEY, how="anti", nulls_equal=True), fresh]
        )
        atomic_write_parquet(
            merged.sort("symbol", "ex_date", "action_type"), self.path, self.settings
        )
        return fresh

    def for_symbols(self, symbols: list[str] | None) -> pl.DataFrame:
        """Return actions of some symbols (all when None), by ex-date."""
        df = self.all()
        if symbols:
            df = df.filter(pl.col("symbol").is_in(symbols) | pl.col("new_symbol").is_in(symbols))
        return df.sort("ex_date", "symbol")
