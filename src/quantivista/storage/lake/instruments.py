"""The instrument master's two tables as Parquet files under `reference/`."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.instruments import HISTORY_SCHEMA, INSTRUMENT_SCHEMA
from quantivista.storage.lake.files import (
    atomic_write_parquet,
    file_identity,
    flocked,
    read_parquet_once,
)
from quantivista.storage.lake.layout import LakeLayout

__all__ = ["ParquetInstrumentStore", "merge_instruments"]


def merge_instruments(
    current: pl.DataFrame, history: pl.DataFrame, new: pl.DataFrame, new_history: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return instruments with `new` replacing by id, and history with `new_history`'s ids replaced.

    Both stores (lake and PostgreSQL) merge this way. An id given twice in `new` is
    stored once, the last row winning.
    """
    new = new.unique("instrument_id", keep="last", maintain_order=True)
    merged = pl.concat(
        [current.join(new.select("instrument_id"), on="instrument_id", how="anti"), new]
    ).sort("instrument_id")
    if new_history.is_empty():
        return merged, history
    kept = history.join(
        new_history.select("instrument_id").unique(), on="instrument_id", how="anti"
    )
    hist = pl.concat([kept, new_history]).sort("symbol", "valid_from", nulls_last=False)
    return merged, hist


class ParquetInstrumentStore:
    """Instruments and ticker history as two Parquet files, merged under a flock."""

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.layout = LakeLayout(Path(root))
        self.settings = settings or StorageSettings()

    def instruments(self) -> pl.DataFrame:
        """Return every stored instrument."""
        return _read(self.layout.instruments, INSTRUMENT_SCHEMA)

    def symbol_history(self) -> pl.DataFrame:
        """Return every ticker interval."""
        return _read(self.layout.symbol_history, HISTORY_SCHEMA)

    def merge(self, instruments: pl.DataFrame, history: pl.DataFrame) -> None:
        """Replace instruments by id and the history of the ids in `history`."""
        with flocked(self.layout.lock_file("instruments")):
            merged, hist = merge_instruments(
                self.instruments(), self.symbol_history(), instruments, history
            )
            # history first: a reader between the two renames sees tickers of an instrument
            # it cannot look up yet, never an instrument whose old tickers were dropped
            if history.height:
                atomic_write_parquet(hist, self.layout.symbol_history, self.settings)
            atomic_write_parquet(merged, self.layout.instruments, self.settings)

    def version(self) -> Hashable:
        """Return the identities of both files."""
        return tuple(_identity(p) for p in (self.layout.instruments, self.layout.symbol_history))


def _read(path: Path, schema: pl.Schema) -> pl.DataFrame:
    try:
        return read_parquet_once(path)
    except FileNotFoundError:
        return pl.DataFrame(schema=schema)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        return file_identity(path)
    except FileNotFoundError:
        return None
