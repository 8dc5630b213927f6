"""Row groups of whole symbols and the cold read that decodes only a symbol's groups:
exact against whole-file reads (also as-of, with deltas, intraday), cached apart, and
invalidated by another process's write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import DATA_FILE, ParquetLake, _Indexed
from quantivista.storage.lake.files import symbol_groups

from .conftest import lake_settings, ohlcv_bars

D1 = Timeframe.parse("1d")
M1 = Timeframe.parse("1m")
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(12)]


def _bars(symbols: list[str], days: int, at: datetime, tf: str = "1d", shift: float = 0.0,
          first: int = 0) -> pl.DataFrame:  # fmt: skip
    step = timedelta(days=1) if tf == "1d" else timedelta(minutes=1)
    ts = [DAY0 + step * (first + d) for d in range(days)]
    close = 100.0 + shift + np.arange(len(symbols) * days, dtype=float)
    return ohlcv_bars(symbols, ts, close, tf, job_id="j", ingested_at=at)


def _lake(root: Path, **kw: object) -> ParquetLake:
    # row groups and codecs are Parquet's (Arrow IPC bases: see test_lake_arrow_bases.py)
    settings = {"buckets": 2, "row_group_rows": 20}
    settings |= {"daily_format": "parquet", "intraday_format": "parquet"}
    return ParquetLake(root, lake_settings(**settings | kw))


@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    min_rows=st.integers(0, 40),
)
def test_symbol_groups_cut_only_between_symbols(lengths: list[int], min_rows: int) -> None:
    names = [f"S{i:02d}" for i in range(len(lengths))]
    table = pa.table({"symbol": np.repeat(names, lengths)})
    cuts = symbol_groups(table, min_rows)
    n = sum(lengths)
    assert cuts[0] == 0 and cuts[-1] == n and cuts == sorted(set(cuts))
    starts = set(np.cumsum([0, *lengths]).tolist())
    assert set(cuts) <= starts  # every cut is where a symbol starts
    sizes = np.diff(cuts)
    if len(sizes) > 1:
        assert (sizes >= min_rows).all()
    if 0 < min_rows <= min(lengths) and n >= 2 * min_rows:
        assert set(cuts) == starts  # symbols at least min_rows long: one group each


def test_files_hold_row_groups_of_whole_symbols(tmp_path: Path) -> None:
    lake = _lake(tmp_path, buckets=1)
    lake.upsert(_bars(SYMBOLS, 30, DAY0))
    meta = pq.read_metadata(lake.partition_dir("1d", "S00") / DATA_FILE)
    assert meta.num_row_groups == len(SYMBOLS)  # 30 rows a symbol >= 20: one group each
    spans = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(0).statistics  # symbol
        assert stats is not None and stats.has_min_max
        spans.append((stats.min, stats.max))
    assert spans == [(s, s) for s in SYMBOLS]
    off = _lake(tmp_path / "one", buckets=1, row_group_rows=0)
    off.upsert(_bars(SYMBOLS, 30, DAY0))
    assert pq.read_metadata(off.partition_dir("1d", "S00") / DATA_FILE).num_row_groups == 1


def test_cold_read_decodes_only_the_symbols_groups_and_equals_the_whole_file(
    tmp_path: Path,
) -> None:
    writer = _lake(tmp_path, buckets=1)
    bars = _bars(SYMBOLS, 30, DAY0)
    writer.upsert(bars)
    reader = _lake(tmp_path, buckets=1)  # a fresh process: nothing cached
    path = reader.partition_dir("1d", "S03") / DATA_FILE
    part = reader._open(path, ["S03"])
    assert isinstance(part, _Indexed) and part.frame.height == 30  # not the 360 of the file
    whole = ParquetLake.read_file(path)
    for symbol in ["S03", "S00", "S11"]:
        got = _lake(tmp_path, buckets=1).read([symbol], D1)
        assert_frame_equal(got, whole.filter(pl.col("symbol") == symbol))
    lo, hi = DAY0 + timedelta(days=3), DAY0 + timedelta(days=9)
    got = _lake(tmp_path, buckets=1).read(["S05", "S07"], D1, lo, hi, columns=["ts", "close"])
    cond = pl.col("symbol").is_in(["S05", "S07"]) & pl.col("ts").is_between(lo, hi, "left")
    want = whole.filter(cond)
    assert_frame_equal(got, want.select("ts", "close"))
    assert_frame_equal(_lake(tmp_path, buckets=1).read(["NOPE"], D1), bars.clear())


def test_cold_as_of_and_delta_reads_equal_the_cached_path(tmp_path: Path) -> None:
    t0, t1, t2 = (DAY0 + timedelta(days=400, hours=h) for h in range(3))
    writer = _lake(tmp_path, buckets=1, delta_files=100)
    writer.upsert(_bars(SYMBOLS, 30, t0))
    writer.upsert(_bars(SYMBOLS[:4], 30, t1, shift=0.5))  # a correction: history
    for symbol in ["S02", "S09"]:
        for as_of in (t0, t1, None):
            cold = _lake(tmp_path, buckets=1, cache_mb=0).read([symbol], D1, as_of=as_of)
            warm = _lake(tmp_path, buckets=1).read([*SYMBOLS, "X"] * 2, D1, as_of=as_of)
            assert_frame_equal(cold, warm.filter(pl.col("symbol") == symbol))
            assert cold.height == 30
    old = _lake(tmp_path, buckets=1).read(["S02"], D1, as_of=t0)
    assert old["close"][0] == 100.0 + 2 * 30  # the version before the correction
    writer.upsert(_bars(["S02"], 2, t2, first=30))  # an append: a delta file
    assert writer.delta_files("1d")
    cold = _lake(tmp_path, buckets=1).read(["S02"], D1)
    assert cold.height == 32 and cold["ts"].is_sorted()
    assert_frame_equal(cold, writer.read(["S02"], D1))


def test_cold_intraday_month_read_is_exact(tmp_path: Path) -> None:
    writer = _lake(tmp_path, buckets=1)
    bars = _bars(SYMBOLS[:5], 50, DAY0, tf="1m")
    writer.upsert(bars)
    got = _lake(tmp_path, buckets=1).read(["S01"], M1)
    assert_frame_equal(got, bars.filter(pl.col("symbol") == "S01"))


def test_a_part_is_cached_apart_and_another_writer_invalidates_it(tmp_path: Path) -> None:
    writer = _lake(tmp_path, buckets=1, cache_mb=0)
    writer.upsert(_bars(SYMBOLS, 30, DAY0))
    reader = _lake(tmp_path, buckets=1)
    first = reader.read(["S04"], D1)
    assert (reader.cache.hits, reader.cache.misses) == (0, 1)
    assert_frame_equal(reader.read(["S04"], D1), first)
    assert reader.cache.hits == 1
    assert reader.read(["S05"], D1)["symbol"].unique().to_list() == ["S05"]  # its own part
    later = DAY0 + timedelta(days=500)
    writer.upsert(_bars(["S04"], 1, later, shift=7.0))
    fresh = reader.read(["S04"], D1)
    assert fresh["close"][0] == 107.0 and fresh["ingested_at"][0] == later
    assert reader.cache.misses == 3  # the rename gave the file a new identity


def _codecs(path: Path) -> dict[str, str]:
    group = pq.read_metadata(path).row_group(0)
    return {group.column(i).path_in_schema: group.column(i).compression for i in range(14)}


def test_daily_files_take_the_daily_codec_and_intraday_ones_the_hot_codec(tmp_path: Path) -> None:
    """Daily base files are uncompressed PLAIN floats by default (cold reads decode them
    fastest); intraday month files keep `compression`; reads are the same either way."""
    lake = _lake(tmp_path, buckets=1)
    daily, minute = _bars(SYMBOLS, 30, DAY0), _bars(SYMBOLS, 30, DAY0, "1m")
    lake.upsert(daily)
    lake.upsert(minute)
    day_file = lake.partition_dir("1d", "S00") / DATA_FILE
    assert _codecs(day_file)["close"] == "UNCOMPRESSED"
    assert "BYTE_STREAM_SPLIT" not in pq.read_metadata(day_file).row_group(0).column(3).encodings
    month_file = lake.partition_dir("1m", "S00", "2024-01") / DATA_FILE
    assert _codecs(month_file)["close"] == "ZSTD"
    zstd = _lake(tmp_path / "zstd", buckets=1, daily_compression=None)
    zstd.upsert(daily)
    assert _codecs(zstd.partition_dir("1d", "S00") / DATA_FILE)["close"] == "ZSTD"
    for other in (ParquetLake(tmp_path, lake.settings), zstd):  # fresh: no cache
        assert_frame_equal(other.read(SYMBOLS[3:5], D1), lake.read(SYMBOLS[3:5], D1))
    fresh = ParquetLake(tmp_path, lake.settings)
    assert_frame_equal(fresh.read([SYMBOLS[4]], M1), lake.read([SYMBOLS[4]], M1))
    assert fresh.read([SYMBOLS[4]], D1).height == 30
