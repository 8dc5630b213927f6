"""The append path: the batch split, the writers' watermarks against other writers, Arrow
IPC delta files (Parquet ones of older stores still read), and merges built outside the
partition locks."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import latest_per_key
from quantivista.storage.lake import bars as bars_module
from quantivista.storage.lake import bars_core, bars_deltas, bars_indexed
from quantivista.storage.lake import files as files_module
from quantivista.storage.lake.appends import Split, month_text
from quantivista.storage.lake.bars import ParquetLake, bucket_of
from quantivista.storage.lake.bars_merge import _same_values
from quantivista.storage.lake.deltas import DELTA_DIR, PARTS_KEY
from quantivista.storage.lake.files import atomic_write_parquet

D1 = Timeframe.parse("1d")
M1 = Timeframe.parse("1m")
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(20)]


def _bars(symbols: list[str], first: int, n: int, at: datetime, tf: str = "1d",
          price: float = 100.0) -> pl.DataFrame:  # fmt: skip
    step = timedelta(days=1) if tf == "1d" else timedelta(minutes=1)
    ts = [DAY0 + step * (first + k) for k in range(n)]
    close = np.full(len(symbols) * n, price) + np.tile(np.arange(n, dtype=float), len(symbols))
    frame = pl.DataFrame(
        {
            "symbol": np.repeat(symbols, n),
            "ts": ts * len(symbols),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.full(len(close), 10.0),
        }
    )
    return coerce_bars(frame, timeframe=tf, provider="t", job_id=f"j{at:%H%M%S%f}",
                       ingested_at=at)  # fmt: skip


def _settings(**kw: object) -> StorageSettings:
    return StorageSettings(buckets=4, write_threads=1, **kw)  # type: ignore[arg-type]


def _tf_dir(root: Path, tf: str = "1m") -> Path:
    return root / "silver" / "bars" / f"timeframe={tf}"


def test_a_split_orders_the_batch_by_partition_symbol_and_ts() -> None:
    rng = np.random.default_rng(7)
    names = [f"X{i:03d}" for i in rng.permutation(40)]
    # each symbol one block of rising minutes across a month end (two partitions each)
    start = datetime(2024, 1, 31, 23, 58, tzinfo=UTC)
    frame = _bars(names, 0, 4, DAY0, tf="1m").with_columns(
        ts=pl.col("ts") - pl.lit(DAY0) + pl.lit(start)
    )
    split = Split.of(
        latest_per_key(frame), True, lambda names: np.array([bucket_of(s, 8) for s in names])
    )
    got = split.frame
    month = pl.col("ts").dt.strftime("%Y-%m")
    bucket = pl.col("symbol").map_elements(lambda s: bucket_of(s, 8), return_dtype=pl.Int64)
    want = frame.sort(bucket, month, "symbol", "ts")
    assert_frame_equal(got, want)
    # partitions: their keys in order, each run one symbol's rows of one partition
    keys = got.select(bucket.alias("b"), month.alias("m")).unique(maintain_order=True)
    assert [(b, month_text(m)) for b, m in split.keys if m is not None] == keys.rows()
    assert int(split.counts.sum()) == got.height and len(split.symbols) == 80
    for i, (b, m) in enumerate(split.keys):
        first, rows = split.part_rows()[i]
        part = got.slice(first, rows)
        assert m is not None
        assert (part["ts"].dt.strftime("%Y-%m") == month_text(m)).all()
        assert [bucket_of(s, 8) for s in part["symbol"].unique()] == [b] * part["symbol"].n_unique()
        assert split.runs(i) == [(s, 2) for s in sorted(part["symbol"].unique())]
    # a run ending at 23:59 of January and one starting at 00:00 of February
    jan, feb = int(split.lasts.min()), int(split.firsts.max())
    assert datetime.fromtimestamp(jan / 1e6, UTC) == datetime(2024, 1, 31, 23, 59, tzinfo=UTC)
    assert datetime.fromtimestamp(feb / 1e6, UTC) == datetime(2024, 2, 1, tzinfo=UTC)


def test_a_writer_checks_its_appends_against_another_writers_deltas(tmp_path: Path) -> None:
    first = ParquetLake(tmp_path, _settings(delta_files=100))
    second = ParquetLake(tmp_path, _settings(delta_files=100))  # another process's writer
    at = [DAY0 + timedelta(days=400, seconds=k) for k in range(4)]
    first.upsert(_bars(SYMBOLS, 0, 5, at[0]))
    first.upsert(_bars(SYMBOLS, 5, 1, at[1]))  # its watermarks now say day 5
    second.upsert(_bars(SYMBOLS, 6, 1, at[2]))  # day 6, unknown to `first`'s watermarks
    deltas = len(first.delta_files())
    again = _bars(SYMBOLS[:3], 6, 1, at[3], price=200.0)  # day 6 again: corrections
    stats = first.upsert(again)
    assert stats.updated == 3 and stats.inserted == 0
    assert len(first.delta_files()) == deltas  # merged into the bases, not appended
    got = ParquetLake(tmp_path, _settings()).read(SYMBOLS, D1)
    assert not got.select("symbol", "ts").is_duplicated().any()
    assert got.height == len(SYMBOLS) * 7
    last = got.filter(pl.col("ts") == DAY0 + timedelta(days=6))
    assert last.filter(pl.col("symbol").is_in(SYMBOLS[:3]))["close"].to_list() == [200.0] * 3


def test_a_writer_notices_another_writer_deleting_its_last_bars(tmp_path: Path) -> None:
    first = ParquetLake(tmp_path, _settings(delta_files=100))
    second = ParquetLake(tmp_path, _settings(delta_files=100))
    t0, t1 = DAY0 + timedelta(days=400), DAY0 + timedelta(days=401)
    first.upsert(_bars(SYMBOLS, 0, 6, t0))
    first.upsert(_bars(SYMBOLS, 6, 1, t0))
    assert second.delete(D1, before=DAY0 + timedelta(days=10), at=t1) == len(SYMBOLS) * 7
    # every bar gone: day 3 appends again (a base rewritten elsewhere: watermarks rebuilt)
    before = len(first.delta_files())
    assert first.upsert(_bars(SYMBOLS, 3, 1, t1)).inserted == len(SYMBOLS)
    assert len(first.delta_files()) == before + 1
    got = ParquetLake(tmp_path, _settings()).read(SYMBOLS, D1)
    assert got["ts"].unique().to_list() == [DAY0 + timedelta(days=3)]
    assert got.height == len(SYMBOLS)


def test_appends_are_arrow_ipc_files_and_parquet_deltas_of_older_stores_still_read(
    tmp_path: Path,
) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    base = _bars(SYMBOLS, 0, 5, DAY0 + timedelta(days=400), tf="1m")
    lake.upsert(base)
    # a Parquet delta as an earlier version wrote it: rows sorted by partition, per-symbol runs
    old = _bars(SYMBOLS, 5, 2, DAY0 + timedelta(days=401), tf="1m")
    bucket = pl.col("symbol").map_elements(lake.bucket, return_dtype=pl.Int64)
    old = old.sort(bucket, "symbol", "ts")
    index = [
        [f"bucket={b:03d}/month=2024-01", [[s, 2] for s in sorted(g["symbol"].unique())]]
        for (b,), g in old.group_by(bucket, maintain_order=True)
    ]
    folder = _tf_dir(tmp_path) / DELTA_DIR
    name = f"delta-{time.time_ns():020d}-000000000000.parquet"
    atomic_write_parquet(old, folder / name, lake.settings, {PARTS_KEY: json.dumps(index)})
    new = _bars(SYMBOLS, 7, 1, DAY0 + timedelta(days=402), tf="1m")
    lake.upsert(new)  # after the Parquet delta: its rows count in the append check
    files = lake.delta_files("1m")
    assert [p.suffix for p in files] == [".parquet", ".arrow"]
    assert ParquetLake.read_file(files[1]).height == len(SYMBOLS)
    want = pl.concat([base, old, new]).sort("symbol", "ts")
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert_frame_equal(reader.read(SYMBOLS, M1), want)
        assert_frame_equal(reader.read(["S04"], M1), want.filter(pl.col("symbol") == "S04"))
        assert reader.stats()["rows"].sum() == want.height
        assert sorted(reader.symbols(M1)) == SYMBOLS
    assert lake.upsert(old.head(1)).unchanged == 1  # a stored bar again: no append
    lake.compact()
    assert not lake.delta_files()
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(SYMBOLS, M1), want)


def _during_merge(monkeypatch: pytest.MonkeyPatch, action: object) -> list[bool]:
    """Run `action()` once a merge has written its file, before it takes the locks."""
    real = bars_deltas.atomic_write_ipc  # `merge_deltas` is in bars_deltas
    ran: list[bool] = []

    def hooked(df: pl.DataFrame, path: Path, *args: object, **kw: object) -> int:
        size = real(df, path, *args, **kw)  # type: ignore[arg-type]
        if path.name.startswith(".tmp-merge-") and not ran:
            ran.append(True)
            action()  # type: ignore[operator]
        return size

    monkeypatch.setattr(bars_deltas, "atomic_write_ipc", hooked)
    return ran


def _base_and_appends(lake: ParquetLake, appends: int) -> list[pl.DataFrame]:
    """Write a 1m base of minutes 0-4 of every symbol, then `appends` one-minute appends
    (deltas); return what was written, in order."""
    written = [_bars(SYMBOLS, 0, 5, DAY0 + timedelta(days=400), tf="1m")]
    lake.upsert(written[0])
    for k in range(appends):
        written.append(_bars(SYMBOLS, 5 + k, 1, DAY0 + timedelta(days=401, seconds=k), tf="1m"))
        lake.upsert(written[-1])
    return written


def test_appends_while_a_merge_is_built_keep_every_partitions_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    written = _base_and_appends(lake, 3)
    sources = lake.delta_files("1m")
    late = _bars(SYMBOLS, 8, 1, DAY0 + timedelta(days=402), tf="1m")

    def append() -> None:  # no partition lock is held while the merge is built
        lake.upsert(late)
        written.append(late)

    ran = _during_merge(monkeypatch, append)
    assert lake.merge_deltas(_tf_dir(tmp_path)) == 2
    assert ran
    files = lake.delta_files("1m")
    assert len(files) == 2 and not set(files) & set(sources)
    merged, newest = files  # the merged file sorts before the append written meanwhile
    assert merged.name.startswith(sources[-1].stem)  # right after its newest source
    assert ParquetLake.read_file(newest)["ts"].unique().to_list() == [DAY0 + timedelta(minutes=8)]
    assert ParquetLake.read_file(merged).height == 3 * len(SYMBOLS)
    assert not list((_tf_dir(tmp_path) / DELTA_DIR).glob(".*"))  # no leftovers
    want = pl.concat(written).sort("symbol", "ts")
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert_frame_equal(reader.read(SYMBOLS, M1), want)
        assert_frame_equal(reader.read(["S11"], M1), want.filter(pl.col("symbol") == "S11"))


def test_a_merge_whose_sources_were_folded_meanwhile_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    written = _base_and_appends(lake, 3)
    other = ParquetLake(tmp_path, _settings())  # another process compacts meanwhile
    ran = _during_merge(monkeypatch, other.compact)
    assert lake.merge_deltas(_tf_dir(tmp_path)) == 0
    assert ran
    assert not lake.delta_files()  # folded; the merged file was not put in place
    assert not list((_tf_dir(tmp_path) / DELTA_DIR).glob(".*"))
    want = pl.concat(written).sort("symbol", "ts")
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        got = reader.read(SYMBOLS, M1)
        assert_frame_equal(got, want)
    nxt = _bars(SYMBOLS, 8, 1, DAY0 + timedelta(days=402), tf="1m")
    assert lake.upsert(nxt).inserted == len(SYMBOLS)
    assert lake.read(SYMBOLS, M1).height == want.height + len(SYMBOLS)


def test_a_month_boundary_batch_appends_to_both_months(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    end = datetime(2024, 1, 31, 23, 50, tzinfo=UTC)
    shift = pl.lit(end) - pl.lit(DAY0)
    base = _bars(SYMBOLS, 0, 5, DAY0, tf="1m").with_columns(ts=pl.col("ts") + shift)
    lake.upsert(base)
    lake.prepare(SYMBOLS, M1, datetime(2024, 2, 1, tzinfo=UTC))  # February's empty bases
    batch = _bars(SYMBOLS, 5, 10, DAY0, tf="1m").with_columns(ts=pl.col("ts") + shift)
    stats = lake.upsert(batch)
    assert stats.inserted == batch.height
    assert len(lake.delta_files("1m")) == 1  # both months' partitions in one delta file
    want = pl.concat([base, batch]).sort("symbol", "ts")
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(SYMBOLS, M1), want)
    assert month_text(649) == "2024-02"


def _during_fold(monkeypatch: pytest.MonkeyPatch, action: object, fmt: str) -> list[bool]:
    """Run `action()` once a fold has written its base file ahead (with the writer of the
    base's format), before it takes the lock."""
    writer = "atomic_write_base_ipc" if fmt == "arrow" else "atomic_write_parquet"
    real = getattr(bars_core, writer)  # `_write_base` is in bars_core
    ran: list[bool] = []

    def hooked(*args: object, **kw: object) -> int:
        size = int(real(*args, **kw))
        path = next(a for a in args if isinstance(a, Path))
        if path.name.startswith(".tmp-fold-") and not ran:
            ran.append(True)
            action()  # type: ignore[operator]
        return size

    monkeypatch.setattr(bars_core, writer, hooked)
    return ran


def _streamed(lake: ParquetLake, batches: int) -> list[pl.DataFrame]:
    written = [_bars(["AAA", "BBB"], 0, 5, DAY0 + timedelta(days=400), tf="1m")]
    lake.upsert(written[0])
    for k in range(batches):
        at = DAY0 + timedelta(days=401, seconds=k)
        written.append(_bars(["AAA", "BBB"], 5 + k, 1, at, tf="1m"))
        lake.upsert(written[-1])
    return written


def _fold_settings(fmt: str, cache_mb: int) -> StorageSettings:
    return StorageSettings(
        buckets=1,
        write_threads=1,
        delta_files=100,
        cache_mb=cache_mb,
        intraday_format=fmt,  # type: ignore[arg-type]
    )


# with the cache off (or a partition too big for it) folds are built ahead too
@pytest.mark.parametrize("cache_mb", [64, 0])
@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_a_fold_built_ahead_leaves_appends_made_meanwhile_as_deltas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, cache_mb: int
) -> None:
    lake = ParquetLake(tmp_path, _fold_settings(fmt, cache_mb))
    written = _streamed(lake, 3)
    folded = lake.delta_files("1m")
    late = _bars(["AAA", "BBB"], 8, 1, DAY0 + timedelta(days=402), tf="1m")
    ran = _during_fold(monkeypatch, lambda: lake.upsert(late), fmt)
    directory = lake.partition_dir("1m", "AAA", "2024-01")
    assert lake.fold(directory) == 3
    assert ran
    base = lake.base_path(directory)
    assert base.name == f"data.{fmt}"
    assert lake._through(base) == folded[-1].name  # built ahead: the late append is not in it
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]
    want = pl.concat([*written, late]).sort("symbol", "ts")
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert_frame_equal(reader.read(["AAA", "BBB"], M1), want)
        assert reader.live_deltas("1m")[-1][1].height == 2  # the late append only
    assert ParquetLake.read_file(base).height == want.height - 2


@pytest.mark.parametrize("cache_mb", [64, 0])
@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_a_fold_built_ahead_of_a_correction_is_dropped_and_folded_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, cache_mb: int
) -> None:
    settings = _fold_settings(fmt, cache_mb)
    lake = ParquetLake(tmp_path, settings)
    written = _streamed(lake, 3)
    fix = _bars(["AAA"], 2, 1, DAY0 + timedelta(days=403), tf="1m", price=500.0)
    other = ParquetLake(tmp_path, settings)  # another process corrects a bar meanwhile
    ran = _during_fold(monkeypatch, lambda: other.upsert(fix), fmt)
    directory = lake.partition_dir("1m", "AAA", "2024-01")
    lake.fold(directory)
    assert ran
    got = ParquetLake(tmp_path, _settings()).read(["AAA", "BBB"], M1)
    assert got.height == pl.concat(written).height
    fixed = got.filter((pl.col("symbol") == "AAA") & (pl.col("ts") == DAY0 + timedelta(minutes=2)))
    assert fixed["close"].to_list() == [500.0]  # the correction survived the fold
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]
    assert_frame_equal(lake.read(["AAA", "BBB"], M1), got)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_a_fold_whose_temporary_a_correction_sweeps_gives_up_without_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # the correction's writer sweeps the partition's temporaries under the lock while the
    # fold, without it, is still writing its own: the fold is stale, not failed
    settings = _fold_settings(fmt, 64)
    lake = ParquetLake(tmp_path, settings)
    written = _streamed(lake, 3)
    fix = _bars(["AAA"], 2, 1, DAY0 + timedelta(days=403), tf="1m", price=500.0)
    other = ParquetLake(tmp_path, settings)
    real = files_module.os.replace
    ran: list[bool] = []

    def sweep_first(src: object, dst: object) -> None:
        if str(dst).rsplit("/", 1)[-1].startswith(".tmp-fold-") and not ran:
            ran.append(True)
            other.upsert(fix)  # sweeps `src` before this rename
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(files_module.os, "replace", sweep_first)
    directory = lake.partition_dir("1m", "AAA", "2024-01")
    assert lake.fold(directory) == 3  # folded under the lock instead
    assert ran
    monkeypatch.undo()
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]
    want = pl.concat(written).sort("symbol", "ts")
    want = want.update(fix, on=["symbol", "timeframe", "ts"])
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert_frame_equal(reader.read(["AAA", "BBB"], M1), want, check_row_order=False)


def test_a_writer_applies_every_delta_other_writers_appended_since_its_last_write(
    tmp_path: Path,
) -> None:
    settings = _settings(delta_files=100)
    mine, first, second = (ParquetLake(tmp_path, settings) for _ in range(3))
    at = [DAY0 + timedelta(days=400, seconds=k) for k in range(5)]
    mine.upsert(_bars(["AAA"], 0, 5, at[0]))
    mine.upsert(_bars(["AAA"], 5, 1, at[1]))  # its watermarks: up to its own delta
    first.upsert(_bars(["BBB"], 0, 5, at[2]))  # two deltas of others, the older one first
    second.upsert(_bars(["CCC"], 0, 5, at[3]))
    assert all(mine.bucket(s) == mine.bucket("AAA") for s in ["BBB", "CCC"])  # one partition
    stats = mine.upsert(_bars(["BBB"], 3, 4, at[4]))  # overlaps the older one: not an append
    assert stats.updated == 2 and stats.inserted == 2  # merged, not appended again
    got = ParquetLake(tmp_path, settings).read(["AAA", "BBB", "CCC"], D1)
    assert not got.select("symbol", "ts").is_duplicated().any()
    assert got.height == 6 + 7 + 5


def test_a_fold_keeps_the_writers_marks_and_later_writes_still_tell_appends_apart(
    tmp_path: Path,
) -> None:
    lake = ParquetLake(tmp_path, StorageSettings(buckets=1, write_threads=1, delta_files=100))
    written = _streamed(lake, 3)
    directory = lake.partition_dir("1m", "AAA", "2024-01")
    marks = lake._marks[directory]
    assert lake.fold(directory) == 3
    assert lake._marks[directory] is marks  # not rebuilt by the next write
    assert marks.identity == files_module.file_identity(lake.base_path(directory))
    after = _bars(["AAA", "BBB"], 8, 1, DAY0 + timedelta(days=402), tf="1m")
    lake.upsert(after)
    assert lake._marks[directory] is marks
    assert len(lake.live_deltas("1m")) == 1  # an append: a delta (the folded ones are in the base)
    # the last bar sent again with another price: a correction, not a second copy
    fix = _bars(["AAA"], 8, 1, DAY0 + timedelta(days=403), tf="1m", price=500.0)
    lake.upsert(fix)
    want = pl.concat([*written, after]).sort("symbol", "ts")
    want = want.update(fix, on=["symbol", "timeframe", "ts"])
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert_frame_equal(reader.read(["AAA", "BBB"], M1), want, check_row_order=False)


def test_a_merge_of_a_writers_own_appends_is_not_read_for_last_bars_again(
    tmp_path: Path,
) -> None:
    lake = ParquetLake(tmp_path, StorageSettings(buckets=1, write_threads=1, delta_files=100))
    written = _streamed(lake, 4)
    assert lake.merge_deltas(_tf_dir(tmp_path)) == 3  # 4 files, now 1
    (merged,) = lake.delta_files("1m")
    written.append(_bars(["AAA", "BBB"], 9, 1, DAY0 + timedelta(days=402), tf="1m"))
    assert lake.upsert(written[-1]).inserted == 2
    # its rows are all before the writer's marks: their last bars were never needed
    assert all(part._last is None for part in lake._deltas[str(merged)].values())
    want = pl.concat(written).sort("symbol", "ts")
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(["AAA", "BBB"], M1), want)


def test_a_merge_holding_another_writers_newer_append_moves_the_writers_marks(
    tmp_path: Path,
) -> None:
    settings = _settings(delta_files=100)
    mine, other = ParquetLake(tmp_path, settings), ParquetLake(tmp_path, settings)
    at = [DAY0 + timedelta(days=400, seconds=k) for k in range(4)]
    mine.upsert(_bars(["AAA", "BBB"], 0, 5, at[0]))
    mine.upsert(_bars(["AAA"], 5, 1, at[1]))  # its marks: up to its own delta
    other.upsert(_bars(["BBB"], 5, 3, at[2]))  # newer, in the same partition
    assert mine.bucket("AAA") == mine.bucket("BBB")
    assert mine.merge_deltas(_tf_dir(tmp_path, "1d")) == 1  # one file now holds BBB's bars
    stats = mine.upsert(_bars(["BBB"], 6, 3, at[3]))  # overlaps them: not an append
    assert stats.updated == 2 and stats.inserted == 1
    got = ParquetLake(tmp_path, settings).read(["AAA", "BBB"], D1)
    assert not got.select("symbol", "ts").is_duplicated().any()
    assert got.height == 6 + 9


def test_a_writers_own_delta_parts_match_the_file_decoded(tmp_path: Path) -> None:
    # the writer builds its delta's partitions from the split, lazily; a reader decodes the
    # file: both must hold the same rows, index and watermarks, across a month end
    writer = ParquetLake(tmp_path, _settings(delta_files=100))
    end = datetime(2024, 1, 31, 23, 57, tzinfo=UTC)
    shift = pl.col("ts") - pl.lit(DAY0) + pl.lit(end)
    writer.upsert(_bars(SYMBOLS, 0, 2, DAY0, tf="1m").with_columns(ts=shift))
    batch = _bars(SYMBOLS[::3], 2, 5, DAY0 + timedelta(1), tf="1m").with_columns(ts=shift)
    writer.upsert(batch)
    folder = _tf_dir(tmp_path, "1m") / DELTA_DIR
    (name,) = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
    path = str(folder / name)
    mine = writer._deltas[path]
    decoded = ParquetLake(tmp_path, _settings(delta_files=100))._delta(path)
    assert sorted(mine) == sorted(decoded) and len(mine) == len(decoded) > 1
    for rel, theirs in decoded.items():
        part = mine[rel]
        assert part is mine[rel]  # built once
        assert_frame_equal(part.frame, theirs.frame)
        assert part.index == theirs.index
        assert part.lasts() == theirs.lasts()
        assert part.first_us() == theirs.first_us()
        assert part.span_us() == theirs.span_us()
    assert "nope" not in mine
    with pytest.raises(KeyError):
        mine["nope"]


def test_latest_per_key_keeps_the_last_of_each_key_in_arrival_order() -> None:
    # a micro-batch with corrections of earlier bars and repeats (the last one wins), and
    # null keys, which repeat like any other key: as `unique(keep="last")` after a sort did
    day = [DAY0 + timedelta(days=k) for k in range(3)]
    frame = pl.DataFrame(
        {
            "symbol": ["B", "A", "B", "A", None, "B", None, "A"],
            "ts": [day[2], day[1], day[0], day[1], day[0], day[2], day[0], None],
            "close": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        }
    )
    got = latest_per_key(frame)
    want = (
        frame.with_row_index("_pos")
        .sort("symbol", "ts", "_pos")
        .unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
        .drop("_pos")
    )
    assert_frame_equal(got, want)
    assert got["close"].to_list() == [7.0, 8.0, 4.0, 3.0, 6.0]
    assert latest_per_key(frame.head(2)).height == 2  # in blocks already: as it is


@pytest.mark.parametrize("seed", range(12))
def test_a_few_rows_merge_by_binary_search_as_the_full_merge_does(seed: int) -> None:
    # `_merge_few` (a correction of a few rows: places by binary search, one gather) gives
    # `_merge`'s rows, counts and superseded versions: updates, unchanged rows (their
    # knowledge time kept), new bars before, among and after a symbol's, new symbols
    rng = np.random.default_rng(seed)
    symbols = ["B", "D", "F", "H"]
    old = _bars(symbols, 0, 30, DAY0, tf="1m").filter(
        pl.Series(rng.random(4 * 30) < 0.8)  # gaps to insert into
    )
    picks = sorted(rng.choice(old.height, size=int(rng.integers(0, 6)), replace=False))
    fixes = old[picks].with_columns(
        close=pl.when(pl.Series(rng.random(len(picks)) < 0.6)).then(pl.col("close") + 1)
        .otherwise(pl.col("close")),
        ingested_at=pl.lit(DAY0 + timedelta(days=9)).cast(old.schema["ingested_at"]),
        job_id=pl.lit("fix"),
    )  # fmt: skip
    extra = _bars([str(s) for s in rng.choice(["A", "B", "E", "H", "Z"], 2)],
                  int(rng.integers(-2, 33)), 2, DAY0 + timedelta(days=9), tf="1m")  # fmt: skip
    new = latest_per_key(pl.concat([fixes, extra.select(fixes.columns)]))
    new = new.sort("symbol", "ts")

    def runs_of(frame: pl.DataFrame) -> list[tuple[str, int]]:
        return [(s, n) for s, n in frame.group_by("symbol", maintain_order=True).len().rows()]

    runs = runs_of(new)
    index = bars_module._Indexed(old).index
    few, stats_few, gone_few, runs_few = bars_module._merge_few(old, index, new, runs)
    full, stats, gone = bars_module._merge(old, new)
    assert stats_few == stats
    if full is None:
        assert few is None
        return
    assert few is not None
    assert_frame_equal(few, full)
    assert runs_few == runs_of(full)
    assert_frame_equal(gone_few.sort("symbol", "ts"), gone.sort("symbol", "ts"))
    # the same rows stacked in another order (a base and its deltas) with the order that
    # sorts them: the same merge, still one gather
    shuffled = rng.permutation(old.height)
    got = bars_module._merge_few(old[shuffled], index, new, runs, np.argsort(shuffled))
    assert got[0] is not None and got[1] == stats and got[3] == runs_few
    assert_frame_equal(got[0], full)
    assert_frame_equal(got[2].sort("symbol", "ts"), gone.sort("symbol", "ts"))


_VALUES = st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.5, float("nan"), float("inf")]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_VALUES, _VALUES), min_size=1, max_size=4))
def test_a_corrections_values_compare_as_eq_missing_does(pairs: list[tuple[Any, Any]]) -> None:
    # nulls equal, NaNs equal, 0.0 equals -0.0: what the columns' `eq_missing` says
    rows = _bars(["A"], 0, len(pairs), DAY0, tf="1m")
    mine = rows.with_columns(close=pl.Series([a for a, _ in pairs], dtype=pl.Float64))
    olds = rows.with_columns(close=pl.Series([b for _, b in pairs], dtype=pl.Float64))
    want = mine["close"].eq_missing(olds["close"]).to_numpy()
    assert _same_values(mine, olds).tolist() == want.tolist()
    changed = mine.with_columns(trades=pl.col("trades").fill_null(0) + 1)  # another column
    assert not _same_values(changed, olds).any()


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_another_processs_fold_keeps_the_writers_marks_without_reading_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    settings = _fold_settings(fmt, 64)
    lake, other = ParquetLake(tmp_path, settings), ParquetLake(tmp_path, settings)
    written = _streamed(lake, 3)
    directory = lake.partition_dir("1m", "AAA", "2024-01")
    marks = lake._marks[directory]
    assert other.fold(directory) == 3  # `qv compact` in another process, say
    assert marks.identity != files_module.file_identity(lake.base_path(directory))

    def no_tail(base: Path) -> None:
        raise AssertionError("the writer read the folded base for its last bars")

    monkeypatch.setattr(lake, "_tail", no_tail)
    written.append(_bars(["AAA", "BBB"], 8, 1, DAY0 + timedelta(days=402), tf="1m"))
    assert lake.upsert(written[-1]).inserted == 2
    monkeypatch.undo()  # reads take tails
    assert lake._marks[directory] is marks
    assert marks.identity == files_module.file_identity(lake.base_path(directory))
    assert len(lake.live_deltas("1m")) == 1  # an append
    fix = _bars(["AAA"], 8, 1, DAY0 + timedelta(days=403), tf="1m", price=500.0)
    assert lake.upsert(fix).updated == 1  # the last bar again: still told apart
    want = pl.concat(written).sort("symbol", "ts").update(fix, on=["symbol", "timeframe", "ts"])
    assert_frame_equal(ParquetLake(tmp_path, settings).read(["AAA", "BBB"], M1), want)


def test_a_fold_of_deltas_the_writer_has_not_seen_rebuilds_its_marks(tmp_path: Path) -> None:
    settings = _fold_settings("arrow", 64)
    lake, other = ParquetLake(tmp_path, settings), ParquetLake(tmp_path, settings)
    written = _streamed(lake, 2)  # marks: AAA and BBB up to minute 6
    directory = lake.partition_dir("1m", "AAA", "2024-01")
    marks = lake._marks[directory]
    # the other writer appends minutes 7-8 and folds them away: the fold's base names the
    # writer's base, but holds bars its marks never saw
    written.append(_bars(["AAA", "BBB"], 7, 2, DAY0 + timedelta(days=402), tf="1m"))
    other.upsert(written[-1])
    assert other.fold(directory) == 3
    again = _bars(["AAA"], 8, 1, DAY0 + timedelta(days=403), tf="1m", price=500.0)
    assert lake.upsert(again).updated == 1  # minute 8 is stored: a correction, not an append
    assert lake._marks[directory] is not marks
    got = ParquetLake(tmp_path, settings).read(["AAA", "BBB"], M1)
    assert not got.select("symbol", "ts").is_duplicated().any()
    want = pl.concat(written).sort("symbol", "ts").update(again, on=["symbol", "timeframe", "ts"])
    assert_frame_equal(got, want)


def test_a_delta_files_spans_and_symbols_match_its_parts_written_or_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(delta_files=100)
    lake = ParquetLake(tmp_path, settings)
    lake.upsert(_bars(SYMBOLS, 0, 5, DAY0 + timedelta(days=400), tf="1m"))
    lake.upsert(_bars(SYMBOLS[:13], 5, 2, DAY0 + timedelta(days=401), tf="1m"))
    (path,) = lake.delta_files("1m")
    written = lake._deltas[str(path)]
    assert isinstance(written, bars_indexed._Appended)
    spans, symbols = written.spans(), written.symbols()
    read = ParquetLake(tmp_path, settings)._delta(path)  # decoded from the file
    assert read.spans() == spans and read.symbols() == symbols == set(SYMBOLS[:13])
    assert written.frame.height == sum(n for _, _, n in spans) == 26
    # what spans say is what the parts hold
    for rel, start, n in spans:
        part = read[rel]
        assert part.source is not None and part.source[1] == start and part.frame.height == n
    # merges and history reads of a whole file take spans and symbols, not parts
    lake.upsert(_bars(SYMBOLS, 7, 1, DAY0 + timedelta(days=402), tf="1m"))

    def no_parts(*args: object) -> None:
        raise AssertionError("a part was built")

    monkeypatch.setattr(bars_indexed, "_appended_part", no_parts)
    at = DAY0 + timedelta(minutes=6)
    got = lake.recent(SYMBOLS, M1, at, at + timedelta(minutes=2))
    assert got.height == 13 + len(SYMBOLS)
    assert lake.merge_deltas(_tf_dir(tmp_path)) == 1


def test_a_background_merge_waits_while_a_write_runs_and_goes_on_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quantivista.ops import foreground

    monkeypatch.setattr(foreground, "YIELD_S", 30.0)  # no bound within the test
    lake = ParquetLake(tmp_path, StorageSettings(buckets=1, write_threads=1, delta_files=100))
    written = _streamed(lake, 4)
    result: list[int] = []
    with foreground.FOREGROUND.running():  # a micro-batch under way
        merger = threading.Thread(target=lambda: result.append(lake.tidy(_tf_dir(tmp_path))))
        merger.start()
        merger.join(0.3)
        assert merger.is_alive() and len(lake.delta_files("1m")) == 4  # waiting, untouched
    merger.join(10.0)
    assert result == [3]  # 4 files merged into 1 once the write ended
    assert_frame_equal(lake.read(["AAA", "BBB"], M1), pl.concat(written).sort("symbol", "ts"))


def test_the_storage_report_counts_a_merged_deltas_crash_left_sources_once(
    tmp_path: Path,
) -> None:
    import shutil

    lake = ParquetLake(tmp_path, StorageSettings(buckets=1, write_threads=1, delta_files=100))
    written = _streamed(lake, 3)
    sources = lake.delta_files("1m")
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in sources:
        shutil.copy(path, kept / path.name)
    assert lake.merge_deltas(_tf_dir(tmp_path)) == 2
    for path in sources:  # a crash between the merged file's rename and the sources' removal
        shutil.copy(kept / path.name, path)
    reader = ParquetLake(tmp_path, _settings())
    assert len(reader.delta_files("1m")) == 4
    hot = reader.storage_report().row(0, named=True)
    assert hot["tier"] == "hot" and hot["files"] == 5  # the base and every delta on disk
    assert hot["rows"] == pl.concat(written).height == reader.read(["AAA", "BBB"], M1).height
