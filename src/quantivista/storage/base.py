"""The store contract every backend fulfils (embedded lake now; PostgreSQL later)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import polars as pl

from quantivista.model.timeframe import Timeframe

__all__ = ["BarStore", "UpsertStats"]


@dataclass(slots=True)
class UpsertStats:
    """What an upsert changed."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    partitions_written: int = 0

    def __iadd__(self, other: UpsertStats) -> UpsertStats:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.partitions_written += other.partitions_written
        return self

    @property
    def written(self) -> int:
        """Return the rows that are new or changed."""
        return self.inserted + self.updated


class BarStore(Protocol):
    """Bars keyed by (symbol, timeframe, ts); writes are idempotent upserts."""

    def upsert(self, bars: pl.DataFrame) -> UpsertStats:
        """Insert new bars and replace changed ones; identical bars are left untouched."""
        ...

    def read(
        self,
        symbols: Sequence[str],
        timeframe: Timeframe,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Return bars of `symbols` with `start <= ts < end`, sorted by symbol and ts."""
        ...

    def symbols(self, timeframe: Timeframe | None = None) -> list[str]:
        """Return the symbols stored (for one timeframe, or any)."""
        ...

    def stats(self) -> pl.DataFrame:
        """Return one row per (timeframe, symbol): rows, first and last ts, bytes, files."""
        ...
