"""Maintenance: SQL over the store, backups, retention, compaction, storage reports.

Every operation works on the backend in use: the lake's files, or the PostgreSQL schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from quantivista.clock import Clock
from quantivista.config import Settings
from quantivista.errors import InvalidInputError
from quantivista.storage import store_exists
from quantivista.storage.base import RetentionPolicy, apply_retention
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.backup import PostgresBars, backup, restore
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.scores import ParquetScoreStore
from quantivista.storage.lake.sweep import sweep_cold, sweep_lake

__all__ = ["MaintenanceService", "RetentionOutcome", "restore_store", "store_exists"]


@dataclass(frozen=True)
class RetentionOutcome:
    """Rows moved (or dropped) per timeframe, and where they went."""

    rows: dict[str, int]
    archived_to: str | None  # None: dropped


class MaintenanceService:
    """Operations on the whole store."""

    def __init__(self, settings: Settings, backend: Backend, clock: Clock) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock

    @property
    def describes(self) -> str:
        """Return where the state lives, for people: a directory or a PostgreSQL schema."""
        if self.backend.kind == "postgres":
            return f"PostgreSQL schema {self.settings.storage.postgres_schema}"
        return str(self.settings.data_dir.resolve())

    def sql(self, query: str, *, allow_writes: bool = False) -> pl.DataFrame:
        """Run SQL over `bars`, `actions` and `quarantine`: read-only unless `allow_writes`."""
        if self.backend.kind == "postgres":
            from quantivista.storage.postgres.bars import PostgresStore
            from quantivista.storage.postgres.sql import sql_query as pg_query

            assert isinstance(self.backend.bars, PostgresStore)
            return pg_query(self.backend.bars, query, allow_writes=allow_writes)
        from quantivista.storage.lake.sql import sql_query

        return sql_query(
            self.settings.data_dir, query, self.settings.storage, allow_writes=allow_writes
        )

    def storage_report(self) -> pl.DataFrame:
        """Return rows, bytes and compression per storage tier."""
        return self.backend.bars.storage_report()

    def backup(self, dest: Path) -> dict[str, Any]:
        """Write a checksummed snapshot of the store into the new directory `dest`."""
        return backup(self.settings.data_dir, dest, PostgresBars.from_settings(self.settings))

    def retention(self) -> RetentionOutcome:
        """Apply `storage.hot_days`: archive older bars to the cold tier, or drop them."""
        hot_days = self.settings.storage.hot_days
        now = self.clock.now()
        bars = self.backend.bars
        if isinstance(bars, ParquetLake) and bars.cold is not None:
            from quantivista.storage.lake.backend import COLD_TIER_KEY
            from quantivista.storage.lake.retention import archive_expired

            url = bars.cold.url
            # remembered first: a read without the setting still finds what moved
            self.backend.catalog.put_state(COLD_TIER_KEY, {"url": url})
            moved = archive_expired(bars, hot_days, now)
            return RetentionOutcome(moved, url)
        policy = RetentionPolicy({tf: timedelta(days=d) for tf, d in hot_days.items()})
        return RetentionOutcome(apply_retention(bars, policy, now), None)

    def compact(self) -> int:
        """Fold the lake's delta files, merge its small history files and compact its
        quality-score files; return the files removed. Temporaries that killed writers
        left (hot and cold) go too, uncounted (see `storage.lake.sweep`)."""
        bars = self.backend.bars
        if not isinstance(bars, ParquetLake):
            raise InvalidInputError("compaction applies to the lake; PostgreSQL vacuums itself")
        after_s = self.settings.storage.sweep_after_s
        sweep_lake(bars.root, after_s=after_s)
        if bars.cold is not None:
            sweep_cold(bars.cold, after_s=after_s)
        scores = self.backend.scores
        removed = scores.compact() if isinstance(scores, ParquetScoreStore) else 0
        return bars.compact() + removed


def restore_store(settings: Settings, src: Path) -> dict[str, Any]:
    """Verify the backup `src` and restore it into the empty store of `settings`.

    A function, not a method: the store must not be opened (and so created) before.
    """
    return restore(src, settings.data_dir, PostgresBars.from_settings(settings))
