"""Quarantine: rejected rows kept with their rule and reason, never dropped."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.schema import (
    QUARANTINE_POLARS_SCHEMA,
    QUARANTINE_ROW_ID,
    RELEASE_POLARS_SCHEMA,
)
from quantivista.storage.lake.files import atomic_write_parquet, flocked, is_temporary
from quantivista.storage.lake.layout import LakeLayout
from quantivista.storage.quarantine import not_held, stored_frame, with_releases

__all__ = ["ParquetQuarantineStore"]

ROW_ID = QUARANTINE_ROW_ID
RELEASE_SCHEMA = RELEASE_POLARS_SCHEMA


class ParquetQuarantineStore:
    """Rejected bars as Parquet files, one per rejecting batch: `quarantine/bars/job_id=<id>/`.

    Files are never rewritten: releasing rows appends a record to `quarantine/released/`,
    and listings hide released rows unless asked for them.
    """

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        layout = LakeLayout(Path(root))
        self.dir = layout.quarantine
        self.released_dir = layout.released
        self.settings = settings or StorageSettings()

    def add(self, rejected: pl.DataFrame, *, job_id: str, at: datetime, dedupe: bool = True) -> int:
        """Store rejected rows (canonical columns plus rule, severity, reason).

        A row already held with the same bar values, rule and reason (the same bad bar
        ingested again) is not stored twice, unless `dedupe` is False (a release re-checks
        rows that are still held). Return the rows stored.
        """
        if rejected.is_empty():
            return 0
        with flocked(LakeLayout(self.dir.parents[1]).lock_file("quarantine")):
            return self._add(rejected, job_id=job_id, at=at, dedupe=dedupe)

    def _add(self, rejected: pl.DataFrame, *, job_id: str, at: datetime, dedupe: bool) -> int:
        if dedupe:
            rejected = not_held(rejected, self.list(rejected["symbol"].unique().to_list()))
            if rejected.is_empty():
                return 0
        frame = stored_frame(rejected, job_id, at)
        path = self.dir / f"job_id={job_id}" / f"{uuid4().hex}.parquet"
        atomic_write_parquet(frame, path, self.settings)
        return frame.height

    def list(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        rule: str | None = None,
        *,
        include_released: bool = False,
    ) -> pl.DataFrame:
        """Return quarantined rows, optionally of some symbols, one job or one rule.

        Released rows are left out unless `include_released`, which adds `released_at`
        and `release_job_id` (null while a row is still held).
        """
        files = _finished(self.dir, job_id)
        if not files:
            df = pl.DataFrame(schema=QUARANTINE_POLARS_SCHEMA)
        else:
            lf = pl.scan_parquet(files, hive_partitioning=False)
            if symbols:
                lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
            if rule:
                lf = lf.filter(pl.col("rule").str.split(",").list.contains(rule))
            df = lf.sort("quarantined_at", "symbol", "ts").collect()
        return with_releases(df, self.releases(), include_released=include_released)

    def releases(self) -> pl.DataFrame:
        """Return every release record (which row, when, through which job), first per row."""
        files = sorted(p for p in self.released_dir.glob("*.parquet") if not is_temporary(p))
        if not files:
            return pl.DataFrame(schema=RELEASE_SCHEMA)
        return pl.read_parquet(files).unique(list(ROW_ID), keep="first", maintain_order=True)

    def mark_released(self, rows: pl.DataFrame, *, release_job_id: str, at: datetime) -> int:
        """Record that `rows` (quarantine rows) went back through the write path."""
        if rows.is_empty():
            return 0
        frame = rows.select(ROW_ID).with_columns(
            released_at=pl.lit(at, RELEASE_SCHEMA["released_at"]),
            release_job_id=pl.lit(release_job_id),
        )
        # named by arrival, so that listing the files in order keeps a row's first release
        path = self.released_dir / f"{time.time_ns():020d}-{uuid4().hex}.parquet"
        atomic_write_parquet(frame.cast(RELEASE_SCHEMA), path, self.settings)
        return frame.height

    def count(self) -> int:
        """Return how many rows are held in quarantine (released rows not counted)."""
        files = _finished(self.dir)
        if not files:
            return 0
        total = int(
            pl.scan_parquet(files, hive_partitioning=False).select(pl.len()).collect().item()
        )
        return total - self.releases().height


def _finished(directory: Path, job_id: str | None = None) -> list[Path]:
    """Return the finished quarantine files (of one job, or all), sorted.

    A concurrent writer's unfinished temporary (hidden) is not one of them: reading it
    would fail, and reading it after its rename too would count its rows twice.
    """
    pattern = f"job_id={job_id}/*.parquet" if job_id else "job_id=*/*.parquet"
    return sorted(p for p in directory.glob(pattern) if not is_temporary(p))
