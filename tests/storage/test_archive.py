"""Archival to a cold fsspec tier, with reads that span hot and cold transparently."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake, storage_report
from quantivista.storage.lake.retention import archive_expired

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
    assert not lake.base_path(lake.partition_dir("1m", "AAA", "2024-01")).exists()
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


# -- the cold tier in reports, listings, SQL and the read cache ------------------------------
D1 = Timeframe.parse("1d")
NOW = datetime(2024, 2, 5, tzinfo=UTC)


def _archived_lake(root: Path, cold_url: str, **settings: Any) -> tuple[ParquetLake, pl.DataFrame]:
    """Return a lake where AAA's minute bars are all archived and BBB's partly (hot_days 3).

    AAA (Jan 29 - Feb 1) is archived whole; BBB (Jan 29 - Feb 8) keeps Feb 2 onwards hot.
    """
    from quantivista.model.schema import coerce_bars

    kw: dict[str, Any] = {"write_threads": 1, "archive_url": cold_url, **settings}
    lake = ParquetLake(root, StorageSettings(**kw))
    raw = pl.concat([_minutes(3), _minutes(10, "BBB")])
    bars = coerce_bars(raw, provider="t", job_id="j", ingested_at=datetime.now(UTC))
    lake.upsert(bars)
    archive_expired(lake, {"1m": 3}, NOW)
    return lake, bars


def _count_calls(monkeypatch: pytest.MonkeyPatch, fs: Any) -> dict[str, int]:
    """Count calls of the archive filesystem's methods that reach the archive."""
    counts: dict[str, int] = {}
    for name in ("open", "find", "glob", "exists", "info", "ls"):
        original = getattr(fs, name)

        def spy(*args: Any, _name: str = name, _orig: Any = original, **kw: Any) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            return _orig(*args, **kw)

        monkeypatch.setattr(fs, name, spy)
    return counts


@pytest.fixture
def memory_url() -> Iterator[str]:
    """Return a fresh memory:// archive URL (the memory filesystem is process-wide)."""
    import fsspec  # type: ignore[import-untyped]

    url = f"memory://cold-{uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def test_storage_report_has_a_cold_row_read_from_the_archive_footers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from quantivista.cli import app

    lake, bars = _archived_lake(tmp_path / "hot", (tmp_path / "cold").as_uri())
    report = {r["tier"]: r for r in storage_report(lake).iter_rows(named=True)}
    assert list(report) == ["hot", "history", "cold"]
    cold_files = sorted((tmp_path / "cold").rglob("data.parquet"))
    cold = report["cold"]
    assert cold["files"] == len(cold_files) > 0
    assert cold["rows"] + report["hot"]["rows"] == bars.height
    assert cold["bytes"] == sum(p.stat().st_size for p in cold_files)
    assert cold["raw_bytes"] > 0
    assert cold["compression_ratio"] == pytest.approx(cold["raw_bytes"] / cold["bytes"])
    assert "cold" not in storage_report(ParquetLake(tmp_path / "plain"))["tier"].to_list()
    runner = CliRunner()
    env = {"QV_STORAGE__ARCHIVE_URL": (tmp_path / "cold").as_uri()}
    out = runner.invoke(app, ["--data-dir", str(tmp_path / "hot"), "storage-report"], env=env)
    assert out.exit_code == 0, out.output
    assert "cold" in out.output and f"{cold['rows']:,}" in out.output


def test_symbols_and_stats_include_archived_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_url: str
) -> None:
    for url in ((tmp_path / "cold").as_uri(), memory_url):
        root = tmp_path / url.split(":")[0]
        lake, bars = _archived_lake(root, url)
        hot_only = ParquetLake(root, StorageSettings())  # no cold tier configured
        assert hot_only.symbols() == ["BBB"]  # AAA is all archived
        assert lake.symbols() == ["AAA", "BBB"]
        assert lake.symbols(M1) == ["AAA", "BBB"] and lake.symbols(D1) == []
        assert lake.timeframes() == ["1m"]
        fresh = ParquetLake(root, lake.settings)  # no cache, index read from disk
        counts = _count_calls(monkeypatch, fresh.cold.fs)  # type: ignore[union-attr]
        stats = fresh.stats()
        assert counts == {}  # from the cold index: the archive is not touched
        expected = (
            bars.group_by("timeframe", "symbol")
            .agg(rows=pl.len(), first_ts=pl.col("ts").min(), last_ts=pl.col("ts").max())
            .sort("symbol")
        )
        assert_frame_equal(
            stats.select("timeframe", "symbol", "rows", "first_ts", "last_ts"),
            expected,
            check_dtypes=False,
        )
        assert stats.schema == fresh.stats().schema
        cold_bytes = storage_report(lake).filter(pl.col("tier") == "cold")["bytes"].item()
        hot_bytes = sum(p.stat().st_size for p in lake.data_files())
        assert stats["bytes"].sum() == pytest.approx(cold_bytes + hot_bytes, abs=4)
        aaa = stats.row(0, named=True)
        assert aaa["files"] == 2  # Jan and Feb cold files, no hot one
        assert hot_only.stats()["symbol"].to_list() == ["BBB"]


def test_sql_spans_both_tiers_once_with_the_hot_copy_winning(
    tmp_path: Path, memory_url: str
) -> None:
    from quantivista.storage.lake.sql import sql_query

    for url in ((tmp_path / "cold").as_uri(), memory_url):
        root = tmp_path / url.split(":")[0]
        lake, bars = _archived_lake(root, url)
        # an interrupted archival leaves rows in both tiers: put AAA's last archived day
        # back into the hot tier with other prices
        again = bars.filter(
            (pl.col("symbol") == "AAA") & (pl.col("ts") >= datetime(2024, 1, 31, tzinfo=UTC))
        ).with_columns(close=pl.col("close") + 1000.0)
        lake.upsert(again)
        query = "SELECT symbol, count(*) AS n, sum(close) AS total FROM bars GROUP BY 1 ORDER BY 1"
        read = lake.read(["AAA", "BBB"], M1)
        expected = (
            read.group_by("symbol").agg(n=pl.len(), total=pl.col("close").sum()).sort("symbol")
        )
        got = sql_query(root, query, lake.settings)
        assert_frame_equal(got, expected, check_dtypes=False)
        assert got["n"].to_list() == [
            bars.filter(pl.col("symbol") == s).height for s in ("AAA", "BBB")
        ]
        assert sql_query(root, query).filter(pl.col("symbol") == "AAA")["n"].item() == again.height
        ts = sql_query(root, "SELECT min(ts) AS lo FROM bars WHERE symbol = 'AAA'", lake.settings)
        assert ts["lo"].item() == bars["ts"].min()
    from typer.testing import CliRunner

    from quantivista.cli import app

    env = {"QV_STORAGE__ARCHIVE_URL": (tmp_path / "cold").as_uri()}
    query = "SELECT count(*) AS n FROM bars WHERE symbol = 'AAA'"
    out = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "file"), "sql", query], env=env)
    assert out.exit_code == 0, out.output
    assert f"{bars.filter(pl.col('symbol') == 'AAA').height}" in out.output
    # a cold tier configured over a directory without a lake: no bars, no error
    empty = StorageSettings(archive_url=(tmp_path / "cold").as_uri())
    assert sql_query(tmp_path / "none", "SELECT count(*) FROM bars", empty).item() == 0


def test_read_spans_tiers_once_in_ts_order_when_a_bar_is_in_both(tmp_path: Path) -> None:
    lake, bars = _archived_lake(tmp_path / "hot", (tmp_path / "cold").as_uri())
    aaa = bars.filter(pl.col("symbol") == "AAA")
    middle = aaa.slice(20, 1).with_columns(close=pl.lit(-1.0))  # re-ingested into the archive
    lake.upsert(middle)
    got = lake.read(["AAA"], M1)
    assert got.height == aaa.height and got["ts"].is_sorted()
    assert got.filter(pl.col("ts") == middle["ts"][0])["close"].item() == -1.0
    window = lake.read(["AAA"], M1, middle["ts"][0], middle["ts"][0] + timedelta(hours=3))
    assert window["close"].to_list()[:1] == [-1.0] and window.height == 3


def test_cold_reads_are_cached_until_the_cold_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_url: str
) -> None:
    for url in ((tmp_path / "cold").as_uri(), memory_url):
        root = tmp_path / url.split(":")[0]
        lake, bars = _archived_lake(root, url)
        reader = ParquetLake(root, lake.settings)
        counts = _count_calls(monkeypatch, reader.cold.fs)  # type: ignore[union-attr]
        assert reader.cold is not None
        files = len(reader.cold.listing())  # Jan and Feb of AAA's bucket and of BBB's
        counts.clear()
        assert reader.read(["BBB"], M1, end=datetime(2024, 1, 30, tzinfo=UTC)).height
        assert counts == {"open": 1}  # the index keeps the files out of range closed
        first = reader.read(["AAA", "BBB"], M1)
        assert counts == {"open": files}  # each cold file once
        counts.clear()
        assert_frame_equal(reader.read(["AAA", "BBB"], M1), first)
        assert_frame_equal(reader.read(["AAA"], M1), first.filter(pl.col("symbol") == "AAA"))
        assert counts == {}  # served by the cache: no listing, no open
        assert reader.read(["AAA"], D1).is_empty() and counts == {}  # nothing archived
        # archiving one more day rewrites BBB's February cold file: its entry must miss
        archive_expired(lake, {"1m": 2}, NOW)
        counts.clear()
        assert_frame_equal(reader.read(["AAA", "BBB"], M1), first)
        assert counts == {"open": 1}
        # another lake object (as another process would) changes a value in a cold file
        fix = bars.filter(pl.col("symbol") == "BBB").head(1).with_columns(close=pl.lit(-5.0))
        other = ParquetLake(root, lake.settings)
        other.upsert(fix.with_columns(ingested_at=pl.lit(datetime.now(UTC))))
        archive_expired(other, {"1m": 2}, NOW)
        assert reader.read(["BBB"], M1)["close"][0] == -5.0


def test_a_lake_with_a_cold_tier_and_nothing_archived_never_touches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantivista.model.schema import coerce_bars

    settings = StorageSettings(write_threads=1, archive_url=(tmp_path / "cold").as_uri())
    lake = ParquetLake(tmp_path / "hot", settings)
    lake.upsert(coerce_bars(_minutes(2), provider="t", job_id="j", ingested_at=NOW))
    lake.read(["AAA"], M1)  # the first cold access builds the (empty) index: one listing
    counts = _count_calls(monkeypatch, lake.cold.fs)  # type: ignore[union-attr]
    for _ in range(3):
        assert lake.read(["AAA", "BBB"], M1).height == _minutes(2).height
    assert lake.symbols() == ["AAA"] and lake.stats().height == 1
    assert ParquetLake(tmp_path / "hot", settings).read(["AAA"], M1).height > 0
    assert counts == {}


def test_the_cold_index_is_rebuilt_from_the_archive_when_missing(tmp_path: Path) -> None:
    import shutil

    lake, _ = _archived_lake(tmp_path / "hot", (tmp_path / "cold").as_uri())
    everything = lake.read(["AAA", "BBB"], M1)
    shutil.rmtree(tmp_path / "hot" / "cold_index")  # e.g. archived by an earlier version
    fresh = ParquetLake(tmp_path / "hot", lake.settings)
    assert_frame_equal(fresh.read(["AAA", "BBB"], M1), everything)
    assert fresh.symbols() == ["AAA", "BBB"]
    # another archive URL: the index describes that archive (empty), then the first again
    elsewhere = StorageSettings(archive_url=(tmp_path / "elsewhere").as_uri())
    assert ParquetLake(tmp_path / "hot", elsewhere).symbols() == ["BBB"]
    assert ParquetLake(tmp_path / "hot", lake.settings).symbols() == ["AAA", "BBB"]
    assert fresh.cold_index is not None
    assert fresh.cold_index.rebuild() == len(list((tmp_path / "cold").rglob("data.parquet")))


def test_a_hot_file_changed_during_archival_keeps_its_rows_until_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantivista.model.schema import coerce_bars
    from quantivista.storage.lake.cold import ColdIndex

    settings = StorageSettings(write_threads=1, archive_url=(tmp_path / "cold").as_uri())
    lake = ParquetLake(tmp_path / "hot", settings)
    bars = coerce_bars(_minutes(3), provider="t", job_id="j", ingested_at=NOW)
    lake.upsert(bars)
    fix = _minutes(3).head(1).with_columns(close=pl.lit(-7.0))
    record = ColdIndex.record

    def late_correction(self: ColdIndex, entries: list[Any]) -> None:
        monkeypatch.setattr(ColdIndex, "record", record)
        # a writer slips in between the cold write and the hot cut
        ParquetLake(tmp_path / "hot", settings).upsert(
            coerce_bars(fix, provider="t", job_id="k", ingested_at=NOW + timedelta(hours=1))
        )
        record(self, entries)

    monkeypatch.setattr(ColdIndex, "record", late_correction)
    moved = archive_expired(lake, {"1m": 3}, NOW)
    jan = bars.filter(pl.col("ts") < datetime(2024, 2, 1, tzinfo=UTC)).height
    assert moved == {"1m": bars.height - jan}  # February moved; January stayed hot
    got = lake.read(["AAA"], M1)
    assert got.height == bars.height and got["close"][0] == -7.0  # hot wins over cold
    assert archive_expired(lake, {"1m": 3}, NOW) == {"1m": jan}
    assert lake.data_files() == []
    assert_frame_equal(ParquetLake(tmp_path / "hot", settings).read(["AAA"], M1), got)
