"""Corporate actions in one sorted Parquet file, keyed by symbol, type, ex-date, provider."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.schema import ACTION_POLARS_SCHEMA
from quantivista.storage.lake.files import (
    atomic_write_parquet,
    file_identity,
    flocked,
    read_parquet_once,
)
from quantivista.storage.lake.layout import LakeLayout

__all__ = ["ACTION_KEY", "ParquetActionStore", "merge_actions", "sort_actions"]

ACTION_KEY = ["symbol", "action_type", "ex_date", "provider"]


def sort_actions(df: pl.DataFrame) -> pl.DataFrame:
    """Return actions in the stored order: symbol, ex-date, type, provider (NULL first).

    Sorting by the whole key gives every backend the same order, ties included.
    """
    return df.sort("symbol", "ex_date", "action_type", "provider", nulls_last=False)


def merge_actions(
    current: pl.DataFrame, actions: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return `current` with `actions` upserted by key, and the rows that were new or changed."""
    incoming = actions.unique(subset=ACTION_KEY, keep="last", maintain_order=True)
    fresh = incoming.join(
        current, on=list(ACTION_POLARS_SCHEMA.names()), how="anti", nulls_equal=True
    )
    if fresh.is_empty():
        return current, fresh
    kept = current.join(fresh.select(ACTION_KEY), on=ACTION_KEY, how="anti", nulls_equal=True)
    return sort_actions(pl.concat([kept, fresh])), fresh


class ParquetActionStore:
    """All corporate actions in one sorted Parquet file (thousands of rows, not millions).

    Upserts read, merge and replace the file under a flock, so concurrent writers (threads
    or processes) never lose each other's events.
    """

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.layout = LakeLayout(Path(root))
        self.path = self.layout.actions
        self.settings = settings or StorageSettings()
        # the last `for_symbols` answer, by the file's identity and the symbols asked for:
        # a stream asks for the same symbols every second (in any order: a batch's
        # `unique()`), and the file rarely changes
        self._last: tuple[Hashable, frozenset[str], pl.DataFrame] | None = None

    def all(self) -> pl.DataFrame:
        """Return every stored action."""
        try:
            return read_parquet_once(self.path)
        except FileNotFoundError:
            return pl.DataFrame(schema=ACTION_POLARS_SCHEMA)

    def upsert(self, actions: pl.DataFrame) -> pl.DataFrame:
        """Insert new actions, replace changed ones; return the rows that were new or changed."""
        if actions.is_empty():
            return actions
        with flocked(self.layout.lock_file("actions")):
            merged, fresh = merge_actions(self.all(), actions)
            if fresh.height:
                atomic_write_parquet(merged, self.path, self.settings)
        return fresh

    def for_symbols(self, symbols: Sequence[str] | None) -> pl.DataFrame:
        """Return actions of some symbols (all when None), by ex-date."""
        wanted = frozenset(symbols) if symbols else frozenset()
        version = self.version()  # taken first: a file replaced meanwhile is newer than it
        last = self._last
        if last is not None and last[0] == version and last[1] == wanted:
            return last[2]
        df = self.all()
        if wanted:
            names = sorted(wanted)
            df = df.filter(pl.col("symbol").is_in(names) | pl.col("new_symbol").is_in(names))
        df = df.sort("ex_date", "symbol", maintain_order=True)
        self._last = (version, wanted, df)
        return df

    def version(self) -> Hashable:
        """Return the action file's identity (changes with every replacement)."""
        try:
            return file_identity(self.path)
        except FileNotFoundError:
            return None
