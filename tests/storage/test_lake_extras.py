"""Lake extras: hot-partition cache, storage report per tier, history compaction."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import polars.testing
import pytest
from polars.testing import assert_frame_equal

from conftest import INGESTED_AT, MakeBars
from quantivista.config import StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake

D1 = Timeframe.parse("1d")


def test_cache_serves_repeats_and_any_write_invalidates(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    reader = ParquetLake(tmp_path, StorageSettings(write_threads=1, cache_mb=16))
    other = ParquetLake(tmp_path, StorageSettings(write_threads=1, cache_mb=0))  # "another process"
    bars = make_bars(["AAA"], 10)
    reader.upsert(bars)  # write-through: the written file is cached as it lands
    first = reader.read(["AAA"], D1)
    again = reader.read(["AAA"], D1, columns=["close"])
    assert reader.cache.hits == 2 and reader.cache.misses == 0
    assert_frame_equal(first, ParquetLake(tmp_path).read(["AAA"], D1))  # equal to the file
    assert again["close"].to_list() == first["close"].to_list()
    later = INGESTED_AT + timedelta(hours=1)
    other.upsert(bars.head(1).with_columns(close=pl.lit(1.0), ingested_at=pl.lit(later)))
    fresh = reader.read(["AAA"], D1)
    assert fresh["close"][0] == 1.0  # the other writer's rename made the entry miss
    assert reader.cache.misses == 1
    off = ParquetLake(tmp_path, StorageSettings(cache_mb=0))
    off.read(["AAA"], D1)
    assert off.cache.hits == 0 and off.cache.misses == 0


def test_storage_report_counts_hot_and_history_tiers(tmp_path: Path, make_bars: MakeBars) -> None:
    from typer.testing import CliRunner

    from quantivista.cli import app
    from quantivista.storage.lake.bars import storage_report

    lake = ParquetLake(tmp_path, StorageSettings(write_threads=1))
    bars = make_bars(["AAA", "BBB"], 50)
    lake.upsert(bars)
    later = INGESTED_AT + timedelta(hours=1)
    lake.upsert(bars.head(3).with_columns(close=pl.lit(1.0), ingested_at=pl.lit(later)))
    report = storage_report(lake)
    assert report.select("tier", "files", "rows").rows() == [("hot", 2, 100), ("history", 1, 3)]
    hot = report.row(0, named=True)
    assert hot["bytes"] > 0 and hot["raw_bytes"] > 0
    assert hot["compression_ratio"] == pytest.approx(hot["raw_bytes"] / hot["bytes"])
    out = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "storage-report"])
    assert out.exit_code == 0 and "history" in out.output


def test_compaction_merges_history_files_and_keeps_as_of_reads(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    lake = ParquetLake(tmp_path, StorageSettings(write_threads=1))
    bars = make_bars(["AAA"], 20)
    lake.upsert(bars)
    for k in range(1, 5):
        at = INGESTED_AT + timedelta(hours=k)
        lake.upsert(bars.head(k).with_columns(close=pl.lit(float(k)), ingested_at=pl.lit(at)))
    moments = [INGESTED_AT + timedelta(hours=k, minutes=30) for k in range(5)]
    before = [lake.read(["AAA"], D1, as_of=t) for t in moments]
    assert lake.compact() == 3
    assert len(lake._history_files(lake.history_root, recursive=True)) == 1
    for t, want in zip(moments, before, strict=True):
        pl.testing.assert_frame_equal(lake.read(["AAA"], D1, as_of=t), want)
    assert lake.compact() == 0
