"""Intraday month files as Arrow IPC (`storage.intraday_format`), uncompressed or with
buffer compression (`storage.intraday_arrow_compression`): batches of whole symbols, reads
of a fresh process (plain and as-of), SQL, the storage report, and archival to Parquet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake import bars_reads
from quantivista.storage.lake.bars import ARROW_FILE, DATA_FILE, ParquetLake, storage_report
from quantivista.storage.lake.files import IpcBase
from quantivista.storage.lake.retention import archive_expired
from quantivista.storage.lake.sql import sql_query

from .conftest import lake_settings, ohlcv_bars

M1 = Timeframe.parse("1m")
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
START = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)  # 60 minutes in January, 60 in February
AT = datetime(2024, 3, 1, tzinfo=UTC)
CODECS = ["none", "lz4", "zstd"]


def _bars(price: float = 100.0, at: datetime = AT, minutes: int = 120) -> pl.DataFrame:
    ts = [START + timedelta(minutes=k) for k in range(minutes)]
    close = np.round(price + np.arange(len(SYMBOLS) * minutes) * 0.01, 2)
    return ohlcv_bars(SYMBOLS, ts, close, "1m", job_id="j", ingested_at=at)


def _lake(root: Path, codec: str, **kw: Any) -> ParquetLake:
    settings = {"buckets": 1, "row_group_rows": 100, "intraday_arrow_compression": codec, **kw}
    return ParquetLake(root, lake_settings(**settings))


@pytest.mark.parametrize("codec", CODECS)
def test_month_files_hold_batches_of_whole_symbols_and_read_back(
    tmp_path: Path, codec: str
) -> None:
    lake = _lake(tmp_path, codec)
    bars = _bars()
    lake.upsert(bars)
    files = lake.data_files("1m")
    assert [p.parent.name for p in files] == ["month=2024-01", "month=2024-02"]
    assert {p.name for p in files} == {ARROW_FILE}
    with open(files[0], "rb") as handle:
        base = IpcBase(handle)
        assert base.runs == [(s, 60) for s in SYMBOLS]
        if codec != "none":  # whole symbols, >= row_group_rows rows (the short rest joins)
            assert base.batch_starts == [0, 120, 300]
        start = 0
        for symbol, n in base.runs:
            rows = pl.from_arrow(base.rows(start, n))
            assert isinstance(rows, pl.DataFrame)
            want = bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") < START.replace(
                day=1, month=2, hour=0)))  # fmt: skip
            assert_frame_equal(rows, want)
            start += n
    fresh = _lake(tmp_path, codec, cache_mb=0)  # a fresh process: slices of the files
    for symbol in SYMBOLS:
        assert_frame_equal(fresh.read([symbol], M1), bars.filter(pl.col("symbol") == symbol))
    feb = datetime(2024, 2, 1, tzinfo=UTC)
    assert_frame_equal(
        fresh.read(["CCC"], M1, start=feb),
        bars.filter((pl.col("symbol") == "CCC") & (pl.col("ts") >= feb)),
    )
    assert_frame_equal(_lake(tmp_path, codec).read(SYMBOLS, M1), bars)
    got = sql_query(tmp_path, "SELECT count(*) AS n, sum(close) AS c FROM bars")
    assert (got["n"][0], got["c"][0]) == (bars.height, pytest.approx(bars["close"].sum()))
    assert fresh.stats()["rows"].sum() == bars.height
    hot = storage_report(fresh).row(0, named=True)
    assert hot["rows"] == bars.height and hot["files"] == 2
    if codec != "none":
        assert hot["raw_bytes"] > hot["bytes"]  # compressed buffers


def test_compressed_month_files_are_smaller_and_read_the_same(tmp_path: Path) -> None:
    bars = _bars()
    sizes = {}
    for codec in CODECS:
        lake = _lake(tmp_path / codec, codec)
        lake.upsert(bars)
        sizes[codec] = sum(p.stat().st_size for p in lake.data_files("1m"))
        assert_frame_equal(_lake(tmp_path / codec, "none").read(SYMBOLS, M1), bars)
    assert sizes["lz4"] < sizes["none"] and sizes["zstd"] < sizes["none"]


@pytest.mark.parametrize("codec", CODECS)
def test_as_of_reads_of_a_month_file_are_exact_in_a_fresh_process(
    tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = _lake(tmp_path, codec, delta_files=0)
    old = _bars()
    lake.upsert(old)
    later = AT + timedelta(days=1)
    fix = _bars(price=500.0, at=later, minutes=90)  # January's minutes and 30 of February
    lake.upsert(fix.filter(pl.col("symbol").is_in(["AAA", "DDD"])))
    history = list((tmp_path / "history").rglob("*.arrow"))  # beside each month, indexed
    assert sorted(p.parent.name for p in history) == ["month=2024-01", "month=2024-02"]
    fast: list[bool] = []  # the read of one month file takes the path of `asof`
    real = bars_reads.read_as_of  # `_as_of_one` (its caller) is in bars_reads

    def spy(*args: Any) -> Any:
        found = real(*args)
        fast.append(found is not None)
        return found

    monkeypatch.setattr(bars_reads, "read_as_of", spy)
    fresh = _lake(tmp_path, codec)
    jan = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    for symbol in ("AAA", "BBB"):
        mine = pl.col("symbol") == symbol
        before = fresh.read([symbol], M1, *jan, as_of=AT + timedelta(hours=1))
        assert_frame_equal(before, old.filter(mine & (pl.col("ts") < jan[1])))
        now = fresh.read([symbol], M1, as_of=later + timedelta(hours=1))
        assert_frame_equal(now, fresh.read([symbol], M1))
    assert fresh.read(["AAA"], M1, *jan)["close"].min() >= 500.0
    assert fast and all(fast)


def test_archival_moves_arrow_months_to_parquet_in_the_cold_tier(tmp_path: Path) -> None:
    settings = {"archive_url": (tmp_path / "cold").as_uri()}
    lake = _lake(tmp_path / "hot", "lz4", **settings)
    bars = _bars()
    lake.upsert(bars)
    moved = archive_expired(lake, {"1m": 1}, datetime(2024, 2, 2, tzinfo=UTC))
    jan = bars.filter(pl.col("ts") < datetime(2024, 2, 1, tzinfo=UTC))
    assert moved == {"1m": jan.height}
    cold = sorted((tmp_path / "cold").rglob("*.*"))
    assert [p.name for p in cold] == [DATA_FILE] and cold[0].parent.name == "month=2024-01"
    assert [p.parent.name for p in lake.data_files("1m")] == ["month=2024-02"]
    assert lake.data_files("1m")[0].name == ARROW_FILE  # the hot month keeps its format
    fresh = _lake(tmp_path / "hot", "lz4", **settings)
    assert_frame_equal(fresh.read(SYMBOLS, M1), bars)
    assert_frame_equal(fresh.read(["BBB"], M1), bars.filter(pl.col("symbol") == "BBB"))
