"""Tails: appends and the validation's warm-up read answered without decoding bases, exact
against `read` in every state (deltas pending, half folded, compacted, a crash-left tail)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from tests.storage.test_lake_deltas import (
    D1,
    DAY0,
    FORMATS,
    M1,
    SYMBOLS,
    _bars,
    _settings,
    daily_format,
)

from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.tails import TAIL_FILE, TAIL_ROWS

AT = DAY0 + timedelta(days=900)
__all__ = ["daily_format"]  # the fixture: every test runs with Arrow IPC and Parquet bases


def _same_as_read(lake: ParquetLake, symbols: list[str], start_day: int, end_day: int) -> None:
    start, end = DAY0 + timedelta(days=start_day), DAY0 + timedelta(days=end_day)
    want = lake.read(symbols, D1, start, end)
    assert want.height  # the windows below hold rows
    assert_frame_equal(lake.recent(symbols, D1, start, end), want)


def test_recent_equals_read_with_deltas_half_folded_and_compacted(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    lake.upsert(_bars(SYMBOLS, 0, 200, AT))
    for k in range(3):
        lake.upsert(_bars(SYMBOLS, 200 + k, 1, AT + timedelta(seconds=1 + k)))
    lake.upsert(_bars(["NEW"], 150, 10, AT + timedelta(seconds=9)))  # a new symbol
    assert len(lake.delta_files()) == 4
    everyone = [*SYMBOLS, "NEW"]
    _same_as_read(lake, everyone, 160, 203)
    _same_as_read(lake, ["S03", "NEW"], 150, 210)
    # one partition folded, its deltas still listed (a fold under way): no duplicates
    lake.fold(lake.partition_dir("1d", "S03"))
    assert len(lake.delta_files()) == 4
    _same_as_read(lake, everyone, 160, 203)
    lake.compact()
    assert not lake.delta_files()
    _same_as_read(lake, everyone, 160, 203)
    # further back than the tails reach: those partitions are read, still exact
    assert TAIL_ROWS < 200
    _same_as_read(lake, everyone, 10, 203)
    # a fresh process (tails read from disk)
    _same_as_read(ParquetLake(tmp_path, _settings()), everyone, 160, 203)


def test_appends_decode_no_base_file(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    lake.upsert(_bars(SYMBOLS, 0, 200, AT))
    fresh = ParquetLake(tmp_path, _settings(delta_files=100))  # nothing decoded yet
    start, end = DAY0 + timedelta(days=140), DAY0 + timedelta(days=200)
    assert fresh.recent(SYMBOLS, D1, start, end).height == len(SYMBOLS) * 60
    stats = fresh.upsert(_bars(SYMBOLS, 200, 1, AT + timedelta(seconds=1)))
    assert stats.inserted == len(SYMBOLS) and len(fresh.delta_files()) == 1
    assert fresh.cache.misses == 0  # neither the read nor the append check decoded a base
    # a correction inside the history is still seen as one (and the base decoded for it)
    fixed = _bars(["S01"], 20, 1, AT + timedelta(seconds=2), price=7.0)
    assert fresh.upsert(fixed).updated == 1
    day = DAY0 + timedelta(days=20)
    got = fresh.read(["S01"], D1, day, day + timedelta(days=1))
    assert got["close"].to_list() == [7.0]
    # and a correction of an appended bar (in a delta, not in the tail)
    fixed = _bars(["S02"], 200, 1, AT + timedelta(seconds=3), price=9.0)
    assert fresh.upsert(fixed).updated == 1


def test_a_tail_that_is_not_its_bases_is_not_trusted(tmp_path: Path) -> None:
    if FORMATS["format"] == "arrow":
        pytest.skip("an Arrow IPC base has no tail file: its tail is sliced from it")
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    lake.upsert(_bars(SYMBOLS, 0, 20, AT))
    s03 = lake.partition_dir("1d", "S03")
    kept = tmp_path / "old-tail.parquet"
    shutil.copy(s03 / TAIL_FILE, kept)
    lake.upsert(_bars(["S03"], 5, 1, AT + timedelta(seconds=1), price=3.0))  # a correction
    shutil.copy(kept, s03 / TAIL_FILE)  # as if a crash left the previous tail
    fresh = ParquetLake(tmp_path, _settings(delta_files=100))
    _same_as_read(fresh, SYMBOLS, 0, 20)
    assert fresh.upsert(_bars(["S03"], 5, 1, AT + timedelta(seconds=2), price=4.0)).updated == 1
    (s03 / TAIL_FILE).unlink()  # or none at all
    fresh = ParquetLake(tmp_path, _settings(delta_files=100))
    _same_as_read(fresh, SYMBOLS, 0, 20)
    assert fresh.upsert(_bars(["S03"], 20, 1, AT + timedelta(seconds=3))).inserted == 1


def test_intraday_recent_spans_months(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    # minutes 0..59 of 2024-01-31 23:00 and the first ones of February
    first = 31 * 24 * 60 - 60
    lake.upsert(_bars(SYMBOLS, first, 70, AT, tf="1m"))
    lake.upsert(_bars(SYMBOLS, first + 70, 1, AT + timedelta(seconds=1), tf="1m"))
    start = DAY0 + timedelta(minutes=first + 30)
    end = DAY0 + timedelta(minutes=first + 71)
    want = lake.read(SYMBOLS, M1, start, end)
    assert want["ts"].dt.month().n_unique() == 2
    assert_frame_equal(lake.recent(SYMBOLS, M1, start, end), want)
    assert_frame_equal(lake.recent(["S00"], M1, start, end), want.head(41))


def test_merged_deltas_read_exactly_and_crash_left_sources_are_ignored(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=1000))
    base = _bars(SYMBOLS, 0, 30, AT)
    lake.upsert(base)
    batches = [_bars(SYMBOLS, 30 + k, 1, AT + timedelta(seconds=1 + k)) for k in range(4)]
    batches.append(_bars(["NEW"], 10, 3, AT + timedelta(seconds=9)))
    for batch in batches[:3]:
        lake.upsert(batch)
    lake.fold(lake.partition_dir("1d", "S03"))  # a partition folded, its deltas listed
    for batch in batches[3:]:
        lake.upsert(batch)
    sources = lake.delta_files("1d")
    kept = tmp_path / "kept"
    kept.mkdir()
    copies = [shutil.copy(path, kept / path.name) for path in sources]
    assert lake.merge_deltas(tmp_path / "silver" / "bars" / "timeframe=1d") == len(sources) - 1
    assert len(lake.delta_files("1d")) == 1
    want = pl.concat([base, *batches]).sort("symbol", "ts")
    everyone = [*SYMBOLS, "NEW"]
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert_frame_equal(reader.read(everyone, D1), want)
        assert_frame_equal(reader.read(["S03"], D1), want.filter(pl.col("symbol") == "S03"))
        _same_as_read(reader, everyone, 20, 40)
    # as if the merge died before removing its sources: they are listed, and ignored
    for copy, path in zip(copies, sources, strict=True):
        shutil.copy(copy, path)
    fresh = ParquetLake(tmp_path, _settings())
    assert_frame_equal(fresh.read(everyone, D1), want)
    _same_as_read(fresh, everyone, 20, 40)
    assert fresh.upsert(_bars(["S01"], 34, 1, AT + timedelta(seconds=20))).inserted == 1
    assert fresh.upsert(_bars(["S01"], 33, 1, AT + timedelta(seconds=21), 5.0)).updated == 1
    assert fresh.merge_deltas(tmp_path / "silver" / "bars" / "timeframe=1d") > 0
    assert len(fresh.delta_files("1d")) == 1  # the crash-left sources went with it
    fresh.compact()
    assert not fresh.delta_files()
    got = ParquetLake(tmp_path, _settings()).read(everyone, D1)
    assert got.height == want.height + 1
    s01 = got.filter(pl.col("symbol") == "S01")
    assert s01["close"].to_list()[-2] == 5.0
    as_of = fresh.read(["S01"], D1, as_of=AT + timedelta(seconds=20, milliseconds=500))
    assert as_of.height == 35 and as_of["close"].to_list()[-2] != 5.0


def test_background_tidying_merges_small_deltas_and_folds_big_ones(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=3))
    lake.upsert(_bars(SYMBOLS, 0, 5, AT, tf="1m"))
    batches = [_bars(SYMBOLS, 5 + k, 1, AT + timedelta(seconds=1 + k), tf="1m") for k in range(20)]
    for batch in batches:
        lake.upsert(batch)
    lake.close()
    assert len(lake.delta_files()) <= 3  # merged as they came (20 x 20 rows: no fold)
    bases = lake.data_files("1m")
    assert bases and {p.suffix for p in bases} == {f".{FORMATS['format']}"}
    assert max(ParquetLake.read_file(p).height for p in bases) <= 5 * len(SYMBOLS)
    want = pl.concat([_bars(SYMBOLS, 0, 5, AT, tf="1m"), *batches]).sort("symbol", "ts")
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(SYMBOLS, M1), want)
