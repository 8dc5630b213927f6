"""The lake (`ParquetLake`: Arrow IPC and Parquet files): upserts, idempotency, knowledge time,
pruning, atomicity, concurrency."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.schema import BAR_POLARS_SCHEMA, coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import UpsertStats
from quantivista.storage.lake import bars as lake_module
from quantivista.storage.lake.bars import ParquetLake, bucket_of
from quantivista.storage.lake.files import atomic_write_parquet

MakeBars = Callable[..., pl.DataFrame]
D1 = Timeframe.parse("1d")
M1 = Timeframe.parse("1m")
LATER = datetime(2024, 7, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def minute_bars(symbol: str, start: datetime, count: int, price: float = 10.0) -> pl.DataFrame:
    ts = [start + timedelta(minutes=i) for i in range(count)]
    return coerce_bars(
        {
            "symbol": [symbol] * count,
            "ts": ts,
            "open": [price] * count,
            "high": [price + 1] * count,
            "low": [price - 1] * count,
            "close": [price + 0.5] * count,
            "volume": [100.0] * count,
        },
        timeframe="1m",
        provider="p",
        job_id="job-1",
        ingested_at=utc(2024, 6, 1),
    )


def data_files(lake: ParquetLake) -> list[Path]:
    return lake.data_files()


def temporaries(lake: ParquetLake) -> list[Path]:
    return sorted(lake.root.rglob(".tmp-*"))  # data and history partitions


def everything(lake: ParquetLake, timeframe: Timeframe = D1) -> pl.DataFrame:
    return lake.read(lake.symbols(timeframe), timeframe)


# -- round trips -----------------------------------------------------------------------------
def test_upsert_then_read_returns_the_same_rows(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    bars = make_bars(["MSFT", "AAPL", "EUR/USD"], 20)
    stats = tmp_lake.upsert(bars)
    assert stats == UpsertStats(inserted=60, updated=0, unchanged=0, partitions_written=3)
    out = tmp_lake.read(["MSFT", "AAPL", "EUR/USD"], D1)
    assert out.schema == BAR_POLARS_SCHEMA
    assert_frame_equal(out, bars.sort("symbol", "ts"))


def test_read_is_sorted_by_symbol_and_ts_whatever_the_input_order(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    bars = make_bars(["BBB", "AAA"], 6)
    tmp_lake.upsert(bars.reverse())
    out = tmp_lake.read(["BBB", "AAA", "BBB"], D1)
    assert_frame_equal(out, bars.sort("symbol", "ts"))


def test_layout_one_file_per_daily_bucket(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    tmp_lake.upsert(make_bars(["AAA", "EUR/USD"], 3))
    rel = sorted(str(p.relative_to(tmp_lake.bars_root)) for p in data_files(tmp_lake))
    buckets = sorted({bucket_of("AAA", 64), bucket_of("EUR/USD", 64)})
    assert rel == [f"timeframe=1d/bucket={b:03d}/data.arrow" for b in buckets]


def test_symbols_of_one_bucket_share_a_file_sorted_by_symbol_and_ts(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    lake = ParquetLake(tmp_path / "lake", StorageSettings(buckets=1, write_threads=1))
    bars = make_bars(["MSFT", "AAPL", "EUR/USD", "IBM"], 5)
    stats = lake.upsert(bars.reverse())
    assert stats == UpsertStats(inserted=20, partitions_written=1)
    (path,) = data_files(lake)
    assert path.relative_to(lake.bars_root).as_posix() == "timeframe=1d/bucket=000/data.arrow"
    assert_frame_equal(lake.read_file(path), bars.sort("symbol", "ts"))
    # a correction to one symbol keeps the others' rows and knowledge time
    fix = (
        bars.filter(pl.col("symbol") == "IBM")
        .head(1)
        .with_columns(close=pl.col("close") + 1, ingested_at=pl.lit(LATER))
    )
    assert lake.upsert(fix) == UpsertStats(updated=1, partitions_written=1)
    out = lake.read(["AAPL", "IBM", "MSFT", "EUR/USD"], D1)
    expected = pl.concat([bars.filter(pl.col("symbol") != "IBM"), fix])
    expected = pl.concat([expected, bars.filter(pl.col("symbol") == "IBM").slice(1)])
    assert_frame_equal(out, expected.sort("symbol", "ts"))
    assert lake.symbols(D1) == ["AAPL", "EUR/USD", "IBM", "MSFT"]


def test_bucket_count_is_fixed_when_the_lake_is_created(tmp_path: Path) -> None:
    ParquetLake(tmp_path / "lake", StorageSettings(buckets=8))
    reopened = ParquetLake(tmp_path / "lake", StorageSettings(buckets=64))
    assert reopened.buckets == 8


def test_a_lake_in_the_old_per_symbol_layout_is_refused(tmp_path: Path) -> None:
    (tmp_path / "lake" / "silver" / "bars" / "timeframe=1d" / "symbol=AAA").mkdir(parents=True)
    with pytest.raises(StorageError, match="per-symbol layout"):
        ParquetLake(tmp_path / "lake")


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_intraday_bars_are_partitioned_by_month(tmp_path: Path, fmt: str) -> None:
    settings = StorageSettings(write_threads=1, intraday_format=fmt)  # type: ignore[arg-type]
    tmp_lake = ParquetLake(tmp_path, settings)
    jan = minute_bars("AAA", utc(2024, 1, 31, 20, 55), 5)
    feb = minute_bars("AAA", utc(2024, 2, 1, 14, 30), 5)
    stats = tmp_lake.upsert(pl.concat([feb, jan]))
    assert stats.inserted == 10
    assert stats.partitions_written == 2
    rel = [str(p.relative_to(tmp_lake.bars_root)) for p in data_files(tmp_lake)]
    bucket = f"bucket={bucket_of('AAA', 64):03d}"
    assert rel == [
        f"timeframe=1m/{bucket}/month=2024-01/data.{fmt}",
        f"timeframe=1m/{bucket}/month=2024-02/data.{fmt}",
    ]
    assert_frame_equal(tmp_lake.read(["AAA"], M1), pl.concat([jan, feb]))
    fresh = ParquetLake(tmp_path, settings)  # a fresh process: the files, not the cache
    assert_frame_equal(fresh.read(["AAA"], M1), pl.concat([jan, feb]))
    assert_frame_equal(fresh.read(["AAA"], M1, start=utc(2024, 2, 1)), feb)


def test_read_bounds_are_start_inclusive_end_exclusive(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    bars = make_bars(["AAA"], 10)
    tmp_lake.upsert(bars)
    ts = bars["ts"]
    out = tmp_lake.read(["AAA"], D1, start=ts[2], end=ts[5])
    assert out["ts"].to_list() == ts.slice(2, 3).to_list()
    assert tmp_lake.read(["AAA"], D1, start=ts[9])["ts"].to_list() == [ts[9]]
    assert tmp_lake.read(["AAA"], D1, end=ts[0]).is_empty()


def test_read_selected_columns(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA"], 5)
    tmp_lake.upsert(bars)
    out = tmp_lake.read(["AAA"], D1, start=bars["ts"][1], columns=["close", "volume"])
    assert out.columns == ["close", "volume"]
    assert out["close"].to_list() == bars["close"].to_list()[1:]


def test_read_unknown_columns_raises(tmp_lake: ParquetLake) -> None:
    with pytest.raises(StorageError, match="unknown columns") as info:
        tmp_lake.read(["AAA"], D1, columns=["close", "adj_close"])
    assert info.value.context["columns"] == ["adj_close"]


def test_read_of_unknown_symbols_is_an_empty_canonical_frame(tmp_lake: ParquetLake) -> None:
    out = tmp_lake.read(["NOPE"], D1)
    assert out.is_empty()
    assert out.schema == BAR_POLARS_SCHEMA
    assert tmp_lake.read(["NOPE"], D1, columns=["ts", "close"]).columns == ["ts", "close"]


@pytest.mark.parametrize("compression", ["zstd", "snappy", "gzip", "lz4", "none"])
def test_every_compression_round_trips(
    tmp_path: Path, make_bars: MakeBars, compression: Any
) -> None:
    lake = ParquetLake(tmp_path, StorageSettings(compression=compression, fsync=True))
    bars = make_bars(2, 5)
    lake.upsert(bars)
    assert_frame_equal(everything(lake), bars)


def test_nulls_and_nan_survive_the_round_trip(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA"], 3).with_columns(
        vwap=pl.Series([None, float("nan"), 1.0]),
        trades=pl.Series([None, 5, None], dtype=pl.Int64),
        provider=pl.Series(["p", None, "q"]),
        ingested_at=pl.Series([None, utc(2024, 1, 1), None], dtype=pl.Datetime("us", "UTC")),
    )
    tmp_lake.upsert(bars)
    assert_frame_equal(tmp_lake.read(["AAA"], D1), bars)


# -- idempotency and knowledge time ----------------------------------------------------------
def test_upserting_the_same_bars_twice_changes_nothing(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    bars = make_bars(2, 10)
    tmp_lake.upsert(bars)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in data_files(tmp_lake)}
    stats = tmp_lake.upsert(bars)
    assert stats == UpsertStats(inserted=0, updated=0, unchanged=20, partitions_written=0)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in data_files(tmp_lake)} == before
    assert_frame_equal(everything(tmp_lake), bars)


def test_unchanged_rows_keep_their_first_knowledge_time(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    first = make_bars(["AAA"], 5)
    tmp_lake.upsert(first)
    again = first.with_columns(
        ingested_at=pl.lit(LATER, pl.Datetime("us", "UTC")), job_id=pl.lit("job-2")
    )
    stats = tmp_lake.upsert(again)
    assert stats.unchanged == 5
    assert stats.written == 0
    out = tmp_lake.read(["AAA"], D1)
    assert set(out["ingested_at"]) == {first["ingested_at"][0]}
    assert set(out["job_id"]) == {"job-test"}


def test_changed_row_replaces_the_old_one_and_unchanged_rows_keep_their_lineage(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    first = make_bars(["AAA"], 5)
    tmp_lake.upsert(first)
    second = first.with_columns(
        close=pl.when(pl.int_range(pl.len()) == 2).then(pl.col("close") + 1).otherwise("close"),
        ingested_at=pl.lit(LATER, pl.Datetime("us", "UTC")),
        job_id=pl.lit("job-2"),
    )
    stats = tmp_lake.upsert(second)
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 1, 4)
    assert stats.partitions_written == 1
    out = tmp_lake.read(["AAA"], D1)
    assert out.height == 5
    assert out["close"].to_list() == second["close"].to_list()
    assert out["job_id"].to_list() == ["job-test", "job-test", "job-2", "job-test", "job-test"]
    assert out["ingested_at"][2] == LATER
    assert out["ingested_at"][0] == first["ingested_at"][0]


@pytest.mark.parametrize(
    "column",
    ["open", "high", "low", "close", "volume", "vwap", "trades", "provider", "quality_flags"],
)
def test_any_value_column_change_is_an_update(
    tmp_lake: ParquetLake, make_bars: MakeBars, column: str
) -> None:
    first = make_bars(["AAA"], 2)
    tmp_lake.upsert(first)
    if first.schema[column] == pl.String:
        changed = first.with_columns(pl.lit("other").alias(column))
    elif column == "quality_flags":
        changed = first.with_columns(pl.lit(1, pl.UInt32).alias(column))
    else:
        changed = first.with_columns((pl.col(column) + 1).alias(column))
    stats = tmp_lake.upsert(changed)
    assert stats.updated == 2
    assert_frame_equal(tmp_lake.read(["AAA"], D1), changed)


def test_null_to_value_is_an_update_and_null_to_null_is_not(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    first = make_bars(["AAA"], 2).with_columns(vwap=pl.lit(None, pl.Float64))
    tmp_lake.upsert(first)
    assert tmp_lake.upsert(first).unchanged == 2
    filled = first.with_columns(vwap=pl.lit(5.0))
    assert tmp_lake.upsert(filled).updated == 2
    assert tmp_lake.read(["AAA"], D1)["vwap"].to_list() == [5.0, 5.0]


def test_mixed_batch_of_new_changed_and_unchanged_rows(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    all_days = make_bars(["AAA"], 8)
    tmp_lake.upsert(all_days.head(5))
    batch = all_days.slice(3).with_columns(
        volume=pl.when(pl.int_range(pl.len()) == 1).then(0.0).otherwise("volume")
    )  # rows 3..7: 3 unchanged, 4 changed, 5..7 new
    stats = tmp_lake.upsert(batch)
    assert (stats.inserted, stats.updated, stats.unchanged) == (3, 1, 1)
    out = tmp_lake.read(["AAA"], D1)
    assert out["ts"].to_list() == all_days["ts"].to_list()
    assert out["volume"][4] == 0.0


def test_within_one_batch_the_last_row_of_a_key_wins(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    bars = make_bars(["AAA"], 3)
    fix = bars.slice(1, 1).with_columns(close=pl.lit(123.0))
    stats = tmp_lake.upsert(pl.concat([bars, fix]))
    assert stats.inserted == 3
    assert tmp_lake.read(["AAA"], D1)["close"][1] == 123.0


def test_empty_upsert_is_a_no_op(tmp_lake: ParquetLake) -> None:
    assert tmp_lake.upsert(pl.DataFrame(schema=BAR_POLARS_SCHEMA)) == UpsertStats()
    assert data_files(tmp_lake) == []


def test_parallel_partition_writers(tmp_path: Path, make_bars: MakeBars) -> None:
    lake = ParquetLake(tmp_path, StorageSettings(write_threads=4))
    bars = make_bars(12, 5)
    assert lake.upsert(bars) == UpsertStats(inserted=60, partitions_written=12)
    assert_frame_equal(everything(lake), bars.sort("symbol", "ts"))


# -- partition pruning -----------------------------------------------------------------------
def test_reading_one_symbol_opens_only_its_file(
    tmp_lake: ParquetLake, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_lake.upsert(make_bars(["AAA", "BBB", "CCC"], 5))
    opened: list[Path] = []
    real = ParquetLake._read_indexed

    def spy(self: ParquetLake, handle: IO[bytes]) -> Any:
        opened.append(Path(handle.name))  # partition files are decoded from one handle
        return real(self, handle)

    monkeypatch.setattr(ParquetLake, "_read_indexed", spy)
    part = ParquetLake._read_symbols  # a cold read decodes only the symbol's row groups

    def spy_part(self: ParquetLake, handle: IO[bytes], wanted: list[str]) -> Any:
        opened.append(Path(handle.name))
        return part(self, handle, wanted)

    monkeypatch.setattr(ParquetLake, "_read_symbols", spy_part)
    reader = ParquetLake(tmp_lake.root, tmp_lake.settings)  # another process: a cold cache
    out = reader.read(["BBB"], D1)
    assert set(out["symbol"]) == {"BBB"}
    assert opened == [tmp_lake.base_path(tmp_lake.partition_dir("1d", "BBB"))]


def test_reading_one_symbol_survives_other_symbols_broken_files(
    tmp_lake: ParquetLake, make_bars: MakeBars
) -> None:
    bars = make_bars(["AAA", "BBB", "CCC"], 5)
    tmp_lake.upsert(bars)
    (tmp_lake.base_path(tmp_lake.partition_dir("1d", "AAA"))).unlink()
    (tmp_lake.base_path(tmp_lake.partition_dir("1d", "CCC"))).write_bytes(b"not parquet")
    assert_frame_equal(tmp_lake.read(["BBB"], D1), bars.filter(pl.col("symbol") == "BBB"))
    with pytest.raises(StorageError, match="cannot read partition file"):
        tmp_lake.read(["CCC"], D1)


def test_reading_a_month_opens_only_that_months_file(
    tmp_lake: ParquetLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    months = [utc(2024, 1, 2, 14, 30), utc(2024, 2, 1, 14, 30), utc(2024, 3, 1, 14, 30)]
    tmp_lake.upsert(pl.concat([minute_bars("AAA", m, 3) for m in months]))
    opened: list[Path] = []
    real = ParquetLake._read_indexed
    monkeypatch.setattr(
        ParquetLake,
        "_read_indexed",
        lambda self, handle: opened.append(Path(handle.name)) or real(self, handle),
    )
    part = ParquetLake._read_symbols
    monkeypatch.setattr(
        ParquetLake,
        "_read_symbols",
        lambda self, handle, wanted: opened.append(Path(handle.name)) or part(self, handle, wanted),
    )
    reader = ParquetLake(tmp_lake.root, tmp_lake.settings)  # another process: a cold cache
    out = reader.read(["AAA"], M1, start=utc(2024, 2, 1), end=utc(2024, 2, 2))
    assert out["ts"].to_list() == [months[1] + timedelta(minutes=i) for i in range(3)]
    assert [p.parent.name for p in opened] == ["month=2024-02"]


# -- atomicity -------------------------------------------------------------------------------
def test_failed_rename_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_lake: ParquetLake, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = make_bars(["AAA"], 5)
    tmp_lake.upsert(bars)
    path = tmp_lake.base_path(tmp_lake.partition_dir("1d", "AAA"))
    before = path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lake_module.os, "replace", broken_replace)
    with pytest.raises(StorageError, match="cannot write partition file") as info:
        tmp_lake.upsert(bars.with_columns(close=pl.col("close") * 2))
    assert "No space left" in info.value.context["error"]
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert temporaries(tmp_lake) == []
    assert_frame_equal(tmp_lake.read(["AAA"], D1), bars)


def test_crash_before_rename_is_invisible_to_readers_and_swept_by_the_next_writer(
    tmp_lake: ParquetLake, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = make_bars(["AAA"], 5)
    tmp_lake.upsert(bars)
    path = tmp_lake.base_path(tmp_lake.partition_dir("1d", "AAA"))
    before = path.read_bytes()

    class Crash(BaseException):
        """Stands for the process dying: no cleanup handler runs."""

    def dying_replace(src: Any, dst: Any) -> None:
        raise Crash

    monkeypatch.setattr(lake_module.os, "replace", dying_replace)
    changed = bars.with_columns(close=pl.col("close") * 2)
    with pytest.raises(Crash):
        tmp_lake.upsert(changed)
    monkeypatch.undo()

    # the half-finished write is on disk, but no reader sees it
    assert len(temporaries(tmp_lake)) == 1
    assert path.read_bytes() == before
    assert_frame_equal(tmp_lake.read(["AAA"], D1), bars)
    assert tmp_lake.stats()["rows"].to_list() == [5]

    # the next writer of the partition removes the leftover and writes normally
    assert tmp_lake.upsert(changed).updated == 5
    assert temporaries(tmp_lake) == []
    assert_frame_equal(tmp_lake.read(["AAA"], D1), changed)


def test_atomic_write_parquet_replaces_whole_files(tmp_path: Path, make_bars: MakeBars) -> None:
    target = tmp_path / "deep" / "dir" / "x.parquet"
    first, second = make_bars(1, 3), make_bars(2, 4)
    size = atomic_write_parquet(first, target, StorageSettings())
    assert size == target.stat().st_size > 0
    atomic_write_parquet(second, target, StorageSettings(fsync=True))
    assert_frame_equal(pl.read_parquet(target), second)
    assert [p.name for p in target.parent.iterdir()] == ["x.parquet"]


# -- concurrency -----------------------------------------------------------------------------
@pytest.mark.parametrize("shared_instance", [True, False], ids=["one-lake", "lake-per-thread"])
def test_concurrent_upserts_to_one_partition_keep_every_row(
    tmp_path: Path, make_bars: MakeBars, shared_instance: bool
) -> None:
    settings = StorageSettings(write_threads=1)
    bars = make_bars(["AAA"], 40)
    chunks = [bars.gather(list(range(i, 40, 8))) for i in range(8)]  # interleaved days
    shared = ParquetLake(tmp_path, settings)
    barrier = threading.Barrier(len(chunks))

    def write(chunk: pl.DataFrame) -> UpsertStats:
        lake = shared if shared_instance else ParquetLake(tmp_path, settings)
        barrier.wait()
        return lake.upsert(chunk)

    with ThreadPoolExecutor(len(chunks)) as pool:
        results = list(pool.map(write, chunks))
    assert sum(r.inserted for r in results) == 40
    assert_frame_equal(shared.read(["AAA"], D1), bars)
    assert temporaries(shared) == []


def test_concurrent_upserts_of_overlapping_rows_count_each_row_once(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    bars = make_bars(["AAA"], 10)
    lake = ParquetLake(tmp_path, StorageSettings(write_threads=1))
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: lake.upsert(bars), range(6)))
    assert sum(r.inserted for r in results) == 10
    assert sum(r.unchanged for r in results) == 50
    assert_frame_equal(lake.read(["AAA"], D1), bars)


# -- catalog views: stats, symbols, timeframes -----------------------------------------------
def test_stats_per_timeframe_and_symbol(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    daily = make_bars(["AAA", "EUR/USD"], 7)
    minutes = pl.concat(
        [
            minute_bars("AAA", utc(2024, 1, 31, 20, 50), 10),
            minute_bars("AAA", utc(2024, 2, 1, 14, 30), 4),
        ]
    )
    tmp_lake.upsert(pl.concat([daily, minutes]))
    stats = tmp_lake.stats()
    assert stats.columns == ["timeframe", "symbol", "rows", "first_ts", "last_ts", "bytes", "files"]
    rows = {(r["timeframe"], r["symbol"]): r for r in stats.iter_rows(named=True)}
    assert set(rows) == {("1d", "AAA"), ("1d", "EUR/USD"), ("1m", "AAA")}
    assert rows[("1d", "AAA")]["rows"] == 7
    assert rows[("1d", "AAA")]["first_ts"] == daily["ts"].min()
    assert rows[("1d", "AAA")]["last_ts"] == daily["ts"].max()
    assert rows[("1d", "AAA")]["files"] == 1
    assert rows[("1m", "AAA")]["rows"] == 14
    assert rows[("1m", "AAA")]["files"] == 2
    assert rows[("1m", "AAA")]["first_ts"] == utc(2024, 1, 31, 20, 50)
    assert rows[("1m", "AAA")]["last_ts"] == utc(2024, 2, 1, 14, 33)
    minute_files = tmp_lake.data_files("1m")  # one base file a month, in its format
    assert len(minute_files) == 2
    assert rows[("1m", "AAA")]["bytes"] == sum(p.stat().st_size for p in minute_files)


def test_stats_of_an_empty_lake(tmp_lake: ParquetLake) -> None:
    stats = tmp_lake.stats()
    assert stats.is_empty()
    assert stats.schema["first_ts"] == pl.Datetime("us", "UTC")


def test_symbols_and_timeframes(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    assert tmp_lake.symbols() == []
    assert tmp_lake.timeframes() == []
    tmp_lake.upsert(make_bars(["MSFT", "EUR/USD"], 2))
    tmp_lake.upsert(minute_bars("AAPL", utc(2024, 1, 2, 14, 30), 2))
    weekly = make_bars(["SPY"], 1).with_columns(timeframe=pl.lit("1w"))
    tmp_lake.upsert(weekly)
    assert tmp_lake.symbols() == ["AAPL", "EUR/USD", "MSFT", "SPY"]
    assert tmp_lake.symbols(D1) == ["EUR/USD", "MSFT"]
    assert tmp_lake.symbols(M1) == ["AAPL"]
    assert tmp_lake.timeframes() == ["1m", "1d", "1w"]


# -- delete ----------------------------------------------------------------------------------
def test_delete_all_bars_of_a_symbol(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA", "BBB"], 5)
    tmp_lake.upsert(bars)
    assert tmp_lake.delete(D1, "AAA") == 5
    assert tmp_lake.read(["AAA"], D1).is_empty()
    assert_frame_equal(tmp_lake.read(["BBB"], D1), bars.filter(pl.col("symbol") == "BBB"))
    assert tmp_lake.stats()["symbol"].to_list() == ["BBB"]
    assert tmp_lake.delete(D1, "AAA") == 0


def test_a_deleted_symbol_is_no_longer_listed(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    tmp_lake.upsert(make_bars(["AAA", "BBB"], 5))
    tmp_lake.delete(D1, "AAA")
    assert tmp_lake.symbols() == ["BBB"]
    assert tmp_lake.symbols(D1) == ["BBB"]


def test_delete_before_a_time(tmp_lake: ParquetLake, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA"], 6)
    tmp_lake.upsert(bars)
    cut = bars["ts"][2]
    assert tmp_lake.delete(D1, "AAA", before=cut) == 2
    assert_frame_equal(tmp_lake.read(["AAA"], D1), bars.filter(pl.col("ts") >= cut))
    assert tmp_lake.delete(D1, "AAA", before=cut) == 0


def test_delete_before_a_time_across_monthly_partitions(tmp_lake: ParquetLake) -> None:
    jan = minute_bars("AAA", utc(2024, 1, 31, 20, 50), 5)
    feb = minute_bars("AAA", utc(2024, 2, 1, 14, 30), 5)
    tmp_lake.upsert(pl.concat([jan, feb]))
    assert tmp_lake.delete(M1, "AAA", before=utc(2024, 2, 1, 14, 32)) == 7
    assert tmp_lake.read(["AAA"], M1)["ts"].to_list() == feb["ts"].to_list()[2:]
    assert [p.parent.name for p in data_files(tmp_lake)] == ["month=2024-02"]


def test_upsert_stats_add_up() -> None:
    total = UpsertStats(1, 2, 3, 1)
    total += UpsertStats(10, 20, 30, 2)
    assert total == UpsertStats(11, 22, 33, 3)
    assert total.written == 33


def test_lake_files_are_plain_parquet(tmp_path: Path, make_bars: MakeBars) -> None:
    tmp_lake = ParquetLake(tmp_path, StorageSettings(daily_format="parquet"))
    bars = make_bars(["AAA"], 4)
    tmp_lake.upsert(bars)
    path = tmp_lake.base_path(tmp_lake.partition_dir("1d", "AAA"))
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert table.schema.field("ts").type.tz == "UTC"
    assert table.num_rows == 4
    assert os.path.getsize(path) > 0
