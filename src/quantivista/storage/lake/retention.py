"""Retention: move bars past their hot days from the lake to its cold tier."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from quantivista.errors import StorageUsageError
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.cold import ColdEntry
from quantivista.storage.lake.files import file_identity, flocked
from quantivista.storage.lake.layout import BAR_DATA_FILE

__all__ = ["archive_expired"]


def archive_expired(
    lake: ParquetLake, hot_days: Mapping[str, int], now: datetime
) -> dict[str, int]:
    """Move bars older than each timeframe's hot retention to the lake's cold tier.

    Return the rows moved per timeframe. Reads keep seeing the moved bars.

    Works bucket by bucket: write the bucket's cold files, record them in the cold index
    (one index write a bucket), then cut the archived rows from the hot files. A hot file
    that changed in between (a late correction) keeps its rows until the next run, which
    archives the corrected versions; until then reads take them from the hot tier.

    One archival runs at a time per lake (a lock file): two at once would each merge the
    same rows into the cold files and could record their index entries in the opposite
    order to their cold writes, leaving the index describing the older file. The lock is
    taken before any partition lock and never inside one.
    """
    if lake.cold is None or lake.cold_index is None:
        raise StorageUsageError("no cold tier configured (storage.archive_url)")
    with flocked(lake.layout.lock_file("archive")):
        return _archive_all(lake, hot_days, now)


def _archive_all(lake: ParquetLake, hot_days: Mapping[str, int], now: datetime) -> dict[str, int]:
    assert lake.cold_index is not None
    lake.cold_index.ensure()
    moved: dict[str, int] = {}
    for name, days in hot_days.items():
        tf = str(Timeframe.parse(name))
        before = now - timedelta(days=days)
        buckets: dict[Path, list[Path]] = {}
        for path in lake.data_files(tf, before=before):
            buckets.setdefault(
                lake.bars_root.joinpath(*path.relative_to(lake.bars_root).parts[:2]), []
            ).append(path)
        moved[tf] = sum(_archive_bucket(lake, paths, before) for paths in buckets.values())
    return moved


def _archive_bucket(lake: ParquetLake, paths: list[Path], before: datetime) -> int:
    assert lake.cold is not None and lake.cold_index is not None
    written = []  # (hot path, its identity when read, rows kept hot, rows archived)
    entries = []
    is_old = pl.col("ts") < pl.lit(before, pl.Datetime("us", "UTC"))  # built once: not cheap
    for path in paths:
        with lake.locked(path.parent):
            lake.fold_locked(path.parent)  # one file to archive from
            try:
                seen = file_identity(path)
            except FileNotFoundError:
                continue
            hot = lake.read_file(path)
            old = hot.filter(is_old)
            if old.is_empty():
                continue
            # the cold tier keeps Parquet, named as a Parquet base of the partition would be
            rel = path.with_name(BAR_DATA_FILE).relative_to(lake.root).as_posix()
            existing = lake.cold.read(rel)  # indexed, or left by an interrupted run, or none
            merged = old if existing is None else pl.concat([existing, old])
            merged = merged.unique(subset=["symbol", "ts"], keep="last").sort("symbol", "ts")
            entries.append(ColdEntry.of(rel, lake.cold.write(rel, merged), merged))
            written.append((path, seen, hot.filter(~is_old), old.height))
    if not entries:
        return 0
    lake.cold_index.record(entries)  # before any hot file loses rows: reads see one or both
    count = 0
    for path, seen, keep, archived in written:
        with lake.locked(path.parent):
            try:
                if file_identity(path) != seen:
                    continue  # changed meanwhile: the next run archives its old rows
            except FileNotFoundError:
                continue
            lake.rewrite_base(path, keep)  # keeps the deltas it accounts for
            count += archived
    return count
