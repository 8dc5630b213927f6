"""Archival to a cold fsspec tier, with reads that span hot and cold transparently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.timeframe import Timeframe
from quantivista.storage.archive import archive_expired
from quantivista.storage.lake import ParquetLake, storage_report

M1 = Timeframe.parse("1m")


def _minutes(days: int, symbol: str = "AAA") -> pl.DataFrame:
    start = datetime(2024, 1, 29, 14, 30, tzinfo=UTC)
    ts = pl.datetime_range(start, start + timedelta(days=days), "1h", eager=True)
    n = len(ts)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "timeframe": ["1m"] * n,
            "ts": ts,
            "open": [float(i) for i in range(n)],
            "high": [float(i) + 1 for i in range(n)],
            "low": [float(i) for i in range(n)],
            "close": [float(i) for i in range(n)],
            "volume": [1.0] * n,
        }
    )


def test_archived_bars_move_to_the_cold_tier_and_stay_readable(tmp_path: Path) -> None:
    from quantivista.model.schema import coerce_bars

    cold_url = (tmp_path / "cold").as_uri()
    # one bucket: both symbols share every hot and cold file, reads must still separate them
    settings = StorageSettings(write_threads=1, archive_url=cold_url, buckets=1)
    lake = ParquetLake(tmp_path / "hot", settings)
    raw = pl.concat([_minutes(10), _minutes(10, "BBB").with_columns(pl.col("close") + 0.5)])
    bars = coerce_bars(raw, provider="t", job_id="j", ingested_at=datetime.now(UTC))
    lake.upsert(bars)
    everything = lake.read(["AAA", "BBB"], M1)
    now = datetime(2024, 2, 5, tzinfo=UTC)
    moved = archive_expired(lake, {"1m": 3}, now)  # keep 3 days hot: older than Feb 2 goes
    cut = now - timedelta(days=3)
    assert moved == {"1m": bars.filter(pl.col("ts") < cut).height}
    assert list((tmp_path / "cold").rglob("month=2024-01/data.parquet"))
    assert not (lake.partition_dir("1m", "AAA", "2024-01") / "data.parquet").exists()
    hot_rows = storage_report(lake).row(0, named=True)["rows"]
    assert hot_rows == bars.height - moved["1m"]
    assert_frame_equal(lake.read(["AAA", "BBB"], M1), everything)  # transparent across tiers
    assert_frame_equal(lake.read(["BBB"], M1), everything.filter(pl.col("symbol") == "BBB"))
    jan = lake.read(["AAA"], M1, datetime(2024, 1, 30, tzinfo=UTC), cut)
    aaa = bars.filter(pl.col("symbol") == "AAA")
    assert (
        jan.height
        == aaa.filter(
            (pl.col("ts") >= datetime(2024, 1, 30, tzinfo=UTC)) & (pl.col("ts") < cut)
        ).height
    )
    assert archive_expired(lake, {"1m": 3}, now) == {"1m": 0}  # nothing left to move
    with pytest.raises(StorageError):
        archive_expired(ParquetLake(tmp_path / "other"), {"1m": 3}, now)


def test_qv_retention_archives_or_deletes_by_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from quantivista.cli import app
    from quantivista.model.schema import coerce_bars

    bars = coerce_bars(_minutes(3), provider="t", job_id="j", ingested_at=datetime.now(UTC))
    for name, archive in (("cold", True), ("gone", False)):
        root = tmp_path / name
        ParquetLake(root).upsert(bars)
        monkeypatch.setenv("QV_STORAGE__HOT_DAYS", '{"1m": 1}')
        if archive:
            monkeypatch.setenv("QV_STORAGE__ARCHIVE_URL", (tmp_path / "cold-tier").as_uri())
        else:
            monkeypatch.delenv("QV_STORAGE__ARCHIVE_URL", raising=False)
        out = CliRunner().invoke(app, ["--data-dir", str(root), "retention"])
        assert out.exit_code == 0, out.output
        assert f"1m: {bars.height:,} bars" in out.output  # all of it is older than a day
        assert ParquetLake(root, StorageSettings(cache_mb=0)).stats().is_empty()
        cold_url = (tmp_path / "cold-tier").as_uri() if archive else None
        left = ParquetLake(root, StorageSettings(archive_url=cold_url))
        assert left.read(["AAA"], M1).height == (bars.height if archive else 0)
