"""The lake's in-process cache of hot partitions: served from memory, never stale."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from conftest import INGESTED_AT, MakeBars
from quantivista.config import StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake import ParquetLake

D1 = Timeframe.parse("1d")


def test_cache_serves_repeats_and_any_write_invalidates(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    reader = ParquetLake(tmp_path, StorageSettings(write_threads=1, cache_mb=16))
    other = ParquetLake(tmp_path, StorageSettings(write_threads=1, cache_mb=0))  # "another process"
    bars = make_bars(["AAA"], 10)
    reader.upsert(bars)
    first = reader.read(["AAA"], D1)
    again = reader.read(["AAA"], D1, columns=["close"])
    assert reader.cache.hits == 1 and reader.cache.misses == 1
    assert again["close"].to_list() == first["close"].to_list()
    later = INGESTED_AT + timedelta(hours=1)
    other.upsert(bars.head(1).with_columns(close=pl.lit(1.0), ingested_at=pl.lit(later)))
    fresh = reader.read(["AAA"], D1)
    assert fresh["close"][0] == 1.0  # the other writer's rename made the entry miss
    assert reader.cache.misses == 2
    off = ParquetLake(tmp_path, StorageSettings(cache_mb=0))
    off.read(["AAA"], D1)
    assert off.cache.hits == 0 and off.cache.misses == 0


def test_storage_report_counts_hot_and_history_tiers(tmp_path: Path, make_bars: MakeBars) -> None:
    from typer.testing import CliRunner

    from quantivista.cli import app
    from quantivista.storage.lake import storage_report

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
