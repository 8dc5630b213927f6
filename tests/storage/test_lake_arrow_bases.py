"""Daily base files as Arrow IPC (`storage.daily_format = "arrow"`): the symbol index, reads
of a fresh process, stores written as Parquet, crash safety, SQL and the storage report."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal
from tests.conftest import MakeBars

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake import bars as lake_module
from quantivista.storage.lake.bars import ARROW_FILE, DATA_FILE, ParquetLake
from quantivista.storage.lake.files import IpcBase
from quantivista.storage.lake.sql import sql_query

D1 = Timeframe.parse("1d")
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def _lake(root: Path, **kw: Any) -> ParquetLake:
    return ParquetLake(root, StorageSettings(**{"buckets": 1, "write_threads": 1, **kw}))


def test_the_symbol_index_names_each_symbols_rows(tmp_path: Path, make_bars: MakeBars) -> None:
    lake = _lake(tmp_path, row_group_rows=7)
    bars = make_bars(SYMBOLS, 10)
    lake.upsert(bars.reverse())
    path = lake.base_path(lake.partition_dir("1d", "AAA"))
    assert path.name == ARROW_FILE
    with open(path, "rb") as handle:
        base = IpcBase(handle)
        assert base.runs == [(s, 10) for s in SYMBOLS]
        start = 0
        for symbol, n in base.runs:  # each run is that symbol's rows, sorted by ts
            rows = pl.from_arrow(base.rows(start, n))
            assert isinstance(rows, pl.DataFrame)
            assert_frame_equal(rows, bars.filter(pl.col("symbol") == symbol))
            start += n
        spanning = pl.from_arrow(base.rows(5, 30))  # across symbols (and batches)
        assert isinstance(spanning, pl.DataFrame)
        assert_frame_equal(spanning, bars.slice(5, 30))


def test_a_fresh_process_reads_one_symbols_slice(
    tmp_path: Path, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = make_bars(SYMBOLS, 20)
    _lake(tmp_path).upsert(bars)
    asked: list[list[str]] = []
    real = ParquetLake._read_symbols

    def spy(self: ParquetLake, handle: IO[bytes], wanted: list[str]) -> Any:
        asked.append(wanted)
        found = real(self, handle, wanted)
        assert found.frame.height == 20 * len(set(wanted) & set(SYMBOLS))  # theirs only
        return found

    monkeypatch.setattr(ParquetLake, "_read_symbols", spy)
    for cache_mb in (256, 0):
        fresh = _lake(tmp_path, cache_mb=cache_mb)
        for symbol in ("CCC", "AAA"):
            got = fresh.read([symbol], D1)
            assert_frame_equal(got, bars.filter(pl.col("symbol") == symbol))
        assert fresh.read(["ZZZ"], D1).is_empty()
    assert asked[:2] == [["CCC"], ["AAA"]]


def test_a_parquet_store_still_reads_and_keeps_its_format(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    old = _lake(tmp_path, daily_format="parquet", buckets=4)
    bars = make_bars(SYMBOLS, 10)
    old.upsert(bars)
    parquet = old.data_files("1d")
    assert parquet and {p.name for p in parquet} == {DATA_FILE}
    lake = _lake(tmp_path, buckets=4)  # the default (arrow) opens it
    assert_frame_equal(lake.read(SYMBOLS, D1), bars)
    assert_frame_equal(lake.read(["BBB"], D1), bars.filter(pl.col("symbol") == "BBB"))
    fix = bars.filter(pl.col("symbol") == "BBB").with_columns(close=pl.col("close") + 1)
    assert lake.upsert(fix).updated == 10
    assert lake.data_files("1d") == parquet  # a partition keeps its format
    other = make_bars(["NEW1", "NEW2", "NEW3", "NEW4", "NEW5", "NEW6"], 3)
    lake.upsert(other)  # new partitions of other buckets: Arrow IPC beside Parquet
    names = {p.parent.name: p.name for p in lake.data_files("1d")}
    assert set(names.values()) <= {DATA_FILE, ARROW_FILE}
    assert all(names[p.parent.name] == DATA_FILE for p in parquet)
    want = pl.concat([bars.filter(pl.col("symbol") != "BBB"), fix, other]).sort("symbol", "ts")
    fresh = _lake(tmp_path, buckets=4, cache_mb=0)
    assert_frame_equal(fresh.read(want["symbol"].unique().to_list(), D1), want)
    assert fresh.symbols() == sorted(want["symbol"].unique())
    assert fresh.stats()["rows"].sum() == want.height
    assert sql_query(tmp_path, "SELECT count(*) AS n FROM bars")["n"][0] == want.height


def test_reads_sql_stats_and_the_report_list_one_base_per_partition(
    tmp_path: Path, make_bars: MakeBars
) -> None:
    lake = _lake(tmp_path)
    bars = make_bars(SYMBOLS, 10)
    lake.upsert(bars)
    (base,) = lake.data_files("1d")
    assert base.name == ARROW_FILE
    stale = bars.with_columns(close=pl.col("close") * 2)
    stale.write_parquet(base.with_name(DATA_FILE))  # a stray Parquet file beside the base
    assert lake.data_files() == [base]
    fresh = _lake(tmp_path, cache_mb=0)
    assert_frame_equal(fresh.read(SYMBOLS, D1), bars)
    assert fresh.stats()["rows"].sum() == bars.height
    report = lake_module.storage_report(fresh).filter(pl.col("tier") == "hot")
    assert report["files"].to_list() == [1]
    got = sql_query(tmp_path, "SELECT count(*) AS n, sum(close) AS c FROM bars")
    assert (got["n"][0], got["c"][0]) == (bars.height, pytest.approx(bars["close"].sum()))


def test_as_of_reads_and_deletes_work_on_arrow_bases(tmp_path: Path, make_bars: MakeBars) -> None:
    lake = _lake(tmp_path)
    bars = make_bars(SYMBOLS, 5)
    lake.upsert(bars)
    path = lake.base_path(lake.partition_dir("1d", "AAA"))
    fix = bars.filter(pl.col("symbol") == "CCC").with_columns(
        close=pl.col("close") * 2, ingested_at=pl.col("ingested_at").dt.offset_by("1d")
    )
    lake.upsert(fix)
    fresh = _lake(tmp_path, cache_mb=0)
    then = fresh.read(["CCC"], D1, as_of=bars["ingested_at"].max())  # type: ignore[arg-type]
    assert_frame_equal(then, bars.filter(pl.col("symbol") == "CCC"))
    assert fresh.delete(D1, ["AAA"]) == 5
    assert path.name == ARROW_FILE and path.exists()
    assert "AAA" not in fresh.symbols()
    report = fresh.storage_report().row(0, named=True)
    assert report["tier"] == "hot" and report["rows"] == 20 and report["files"] == 1


def test_a_crash_before_the_rename_keeps_the_old_arrow_base(
    tmp_path: Path, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = _lake(tmp_path)
    bars = make_bars(SYMBOLS, 5)
    lake.upsert(bars)
    path = lake.base_path(lake.partition_dir("1d", "AAA"))
    before = path.read_bytes()

    class Crash(BaseException):
        """Stands for the process dying: no cleanup handler runs."""

    real = lake_module.os.replace

    def dying_replace(src: Any, dst: Any) -> None:  # at the base's rename (history is done)
        if str(dst).endswith(ARROW_FILE):
            raise Crash
        real(src, dst)

    monkeypatch.setattr(lake_module.os, "replace", dying_replace)
    changed = bars.with_columns(close=pl.col("close") + 1)
    with pytest.raises(Crash):
        lake.upsert(changed)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.glob(".tmp-*")]  # the leftover, not data
    fresh = _lake(tmp_path, cache_mb=0)
    assert_frame_equal(fresh.read(SYMBOLS, D1), bars)
    assert fresh.upsert(changed).updated == bars.height  # the next writer sweeps it
    assert not list(path.parent.glob(".tmp-*"))
    assert_frame_equal(_lake(tmp_path).read(SYMBOLS, D1), changed)


def test_a_damaged_arrow_base_is_a_storage_error(tmp_path: Path, make_bars: MakeBars) -> None:
    lake = _lake(tmp_path)
    lake.upsert(make_bars(SYMBOLS, 5))
    path = lake.base_path(lake.partition_dir("1d", "AAA"))
    path.write_bytes(path.read_bytes()[:100])
    for cache_mb in (0, 256):
        with pytest.raises(StorageError, match="cannot read partition file"):
            _lake(tmp_path, cache_mb=cache_mb).read(["AAA"], D1)


def test_arrow_bases_are_polars_types_without_copies(tmp_path: Path, make_bars: MakeBars) -> None:
    lake = _lake(tmp_path)
    lake.upsert(make_bars(SYMBOLS, 5))
    path = lake.base_path(lake.partition_dir("1d", "AAA"))
    with open(path, "rb") as handle:
        table = IpcBase(handle).table()
    assert table.schema.field("symbol").type == pa.string_view()  # polars' own: no cast
    assert table.schema.field("ts").type == pa.timestamp("us", "UTC")
