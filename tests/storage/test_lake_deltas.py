"""Appends as delta files: exact reads (also as-of) before and after folds, crash-left
deltas, kill -9 during appends and folds, and concurrent appenders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake import bars as bars_module
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.deltas import PartitionView

from .conftest import lake_settings, ohlcv_bars

MinuteLake = Callable[..., tuple[ParquetLake, list[pl.DataFrame]]]
D1 = Timeframe.parse("1d")
M1 = Timeframe.parse("1m")
DAY0 = datetime(2024, 1, 1, tzinfo=UTC)


def _bars(symbols: list[str], first: int, days: int, at: datetime, price: float = 100.0,
          tf: str = "1d") -> pl.DataFrame:  # fmt: skip
    step = timedelta(days=1) if tf == "1d" else timedelta(minutes=1)
    ts = [DAY0 + step * (first + d) for d in range(days)]
    close = np.full(len(symbols) * days, price) + np.tile(np.arange(days, dtype=float),
                                                          len(symbols))  # fmt: skip
    return ohlcv_bars(symbols, ts, close, tf, job_id=f"j{at:%H%M%S%f}", ingested_at=at)


def _key_sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort("symbol", "ts")


# `storage.daily_format` and `storage.intraday_format` of `_settings`: each test runs with both
FORMATS = {"format": "arrow"}


@pytest.fixture(autouse=True, params=["arrow", "parquet"])
def daily_format(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(FORMATS, "format", request.param)
    return str(request.param)


def _settings(**kw: object) -> StorageSettings:
    kw.setdefault("daily_format", FORMATS["format"])
    kw.setdefault("intraday_format", FORMATS["format"])
    return lake_settings(buckets=4, **kw)


SYMBOLS = [f"S{i:02d}" for i in range(20)]  # > 16: reads of all of them take the bulk path


def _minute(k: int) -> pl.DataFrame:
    """Minute 5 + k of every symbol, written k seconds into day 401: one append."""
    return _bars(SYMBOLS, 5 + k, 1, DAY0 + timedelta(days=401, seconds=k), tf="1m")


@pytest.fixture
def minute_lake(tmp_path: Path) -> MinuteLake:
    """Return a maker of a 1m lake in `tmp_path`: a base of minutes 0-4 of every symbol
    (written on day 400), then `appends` appends of one minute each (`_minute`)."""

    def make(appends: int, delta_files: int = 100) -> tuple[ParquetLake, list[pl.DataFrame]]:
        lake = ParquetLake(tmp_path, _settings(delta_files=delta_files))
        written = [_bars(SYMBOLS, 0, 5, DAY0 + timedelta(days=400), tf="1m")]
        written += [_minute(k) for k in range(appends)]
        for frame in written:
            lake.upsert(frame)
        return lake, written

    return make


def _fold_dying_before_the_removal(lake: ParquetLake, keep: Path) -> int:
    """Fold the lake's deltas, then put them back as if the fold died before removing them
    (copies kept in the new folder `keep`); return how many."""
    keep.mkdir()
    copies = {path: keep / f"{n}" for n, path in enumerate(lake.delta_files())}
    for path, copy in copies.items():
        shutil.copy(path, copy)
    lake.compact()
    for path, copy in copies.items():
        shutil.copy(copy, path)
    return len(copies)


def test_appends_are_deltas_and_reads_are_exact_before_and_after_a_fold(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    at = [DAY0 + timedelta(days=400, seconds=i) for i in range(6)]
    base = _bars(SYMBOLS, 0, 30, at[0])
    assert lake.upsert(base).inserted == base.height
    nightly = [_bars(SYMBOLS, 30 + k, 1, at[1 + k]) for k in range(3)]
    newcomer = _bars(["NEW"], 10, 5, at[4])  # a new symbol: after its (absent) history
    for batch in [*nightly, newcomer]:
        stats = lake.upsert(batch)
        assert stats.inserted == batch.height and stats.updated == 0
    deltas = lake.delta_files("1d")
    assert deltas  # nothing was rewritten: the appends sit beside the partition files
    assert not lake._history_files(tmp_path / "history", recursive=True)  # none superseded
    want = _key_sorted(pl.concat([base, *nightly, newcomer]))
    everyone = [*SYMBOLS, "NEW"]
    assert_frame_equal(lake.read(everyone, D1), want)  # bulk path
    for symbol in ["S03", "NEW"]:  # one symbol at a time
        assert_frame_equal(lake.read([symbol], D1), want.filter(pl.col("symbol") == symbol))
    lo, hi = DAY0 + timedelta(days=29), DAY0 + timedelta(days=32)
    in_range = want.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
    assert_frame_equal(lake.read(everyone, D1, lo, hi), in_range)
    assert_frame_equal(lake.read(["S07"], D1, lo, hi), in_range.filter(pl.col("symbol") == "S07"))
    # as-of: what the lake held after the second night
    then = lake.read(everyone, D1, as_of=at[2])
    assert_frame_equal(_key_sorted(then), _key_sorted(pl.concat([base, *nightly[:2]])))
    assert sorted(lake.symbols(D1)) == sorted(everyone)
    assert lake.stats()["rows"].sum() == want.height
    # a fresh process (no cache) sees the same; a fold leaves the same rows in fewer files
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(everyone, D1), want)
    assert lake.compact() >= len(deltas)
    assert not lake.delta_files()
    assert_frame_equal(lake.read(everyone, D1), want)
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(everyone, D1, as_of=at[2]), then)


def test_a_correction_after_appends_keeps_exact_history(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings())
    t0, t1, t2 = (DAY0 + timedelta(days=400, hours=h) for h in range(3))
    lake.upsert(_bars(SYMBOLS, 0, 10, t0))
    appended = _bars(SYMBOLS, 10, 1, t1)
    lake.upsert(appended)
    assert lake.delta_files()
    fixed = _bars(["S05"], 10, 1, t2, price=500.0)  # corrects the appended bar
    stats = lake.upsert(fixed)
    assert stats.updated == 1
    last = DAY0 + timedelta(days=10)
    assert lake.read(["S05"], D1, start=last)["close"].to_list() == [500.0]
    assert lake.read(["S05"], D1, start=last, as_of=t1 + timedelta(minutes=1))[
        "close"
    ].to_list() == [100.0]
    assert lake.read(["S05"], D1, start=last, as_of=t0 + timedelta(minutes=1)).is_empty()
    # the same bar again changes nothing
    assert lake.upsert(appended.filter(pl.col("symbol") == "S06")).unchanged == 1


def test_a_delta_left_by_a_crash_after_its_fold_is_ignored_then_removed(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings())
    t0, t1 = DAY0 + timedelta(days=400), DAY0 + timedelta(days=401)
    base, added = _bars(SYMBOLS, 0, 10, t0), _bars(SYMBOLS, 10, 2, t1)
    lake.upsert(base)
    lake.upsert(added)
    kept = _fold_dying_before_the_removal(lake, tmp_path / "kept")
    want = _key_sorted(pl.concat([base, added]))
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        got = reader.read(SYMBOLS, D1)
        assert not got.select("symbol", "ts").is_duplicated().any()
        assert_frame_equal(got, want)
    assert lake.stats()["rows"].sum() == want.height  # the folded deltas count once
    assert lake.compact() == kept
    assert not lake.delta_files()
    assert_frame_equal(lake.read(SYMBOLS, D1), want)


def test_background_folds_keep_the_delta_count_bounded(
    tmp_path: Path, minute_lake: MinuteLake
) -> None:
    lake, written = minute_lake(30, delta_files=3)
    lake.close()  # waits for the folds under way
    assert len(lake.delta_files()) <= 4 * 3  # 4 partitions, each folded at 3 deltas
    want = _key_sorted(pl.concat(written))
    got = ParquetLake(tmp_path, _settings()).read(SYMBOLS, M1)
    assert_frame_equal(got.select("symbol", "ts", "close"), want.select("symbol", "ts", "close"))


def test_concurrent_appenders_into_shared_partitions_lose_nothing(tmp_path: Path) -> None:
    settings = lake_settings(buckets=1, delta_files=4)
    ParquetLake(tmp_path, settings).upsert(_bars(["A00", "B00"], 0, 5, DAY0))
    groups = [[f"A{i:02d}" for i in range(6)], [f"B{i:02d}" for i in range(6)]]
    written: list[pl.DataFrame] = []
    barrier = threading.Barrier(len(groups))
    errors: list[BaseException] = []

    def append(symbols: list[str]) -> None:
        lake = ParquetLake(tmp_path, settings)  # a writer of its own, like another process
        barrier.wait()
        try:
            for day in range(5, 25):
                batch = _bars(symbols, day, 1, DAY0 + timedelta(days=400, seconds=day))
                lake.upsert(batch)
                written.append(batch)
            lake.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    everyone = groups[0] + groups[1]
    got = ParquetLake(tmp_path, settings).read(everyone, D1)
    assert not got.select("symbol", "ts").is_duplicated().any()
    first = _bars(["A00", "B00"], 0, 5, DAY0)
    assert_frame_equal(
        got.select("symbol", "ts"), _key_sorted(pl.concat([first, *written])).select("symbol", "ts")
    )


_CHILD = """
import sys
from datetime import UTC, datetime, timedelta
sys.path.insert(0, sys.argv[2])
from tests.storage.test_lake_deltas import DAY0, _bars, _settings, SYMBOLS
from quantivista.storage.lake import bars as bars_module
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.deltas import PartitionView
lake = ParquetLake(sys.argv[1], _settings(delta_files=2))
day = 5
while True:
    lake.upsert(_bars(SYMBOLS, day, 1, DAY0 + timedelta(days=400, seconds=day)))
    print(day, flush=True)
    day += 1
"""


def test_kill_9_during_appends_and_folds_loses_no_committed_bar(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    first = _bars(SYMBOLS, 0, 5, DAY0)
    ParquetLake(root, _settings()).upsert(first)
    here = str(Path(__file__).parents[2])  # the checkout: tests.storage imports from it
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), here], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    done = []
    deadline = time.monotonic() + 60
    while len(done) < 12 and time.monotonic() < deadline:  # appends and background folds
        done.append(int(child.stdout.readline()))
    time.sleep(np.random.default_rng().uniform(0, 0.05))  # somewhere in the next write
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert len(done) == 12
    # on a loaded machine the child runs ahead of this reader: every write it reported
    # before the kill counts as committed
    done.extend(int(line) for line in child.stdout.read().split())
    child.stdout.close()
    lake = ParquetLake(root, _settings())
    got = lake.read(SYMBOLS, D1)
    assert not got.select("symbol", "ts").is_duplicated().any()
    days = got.group_by("symbol").agg(pl.col("ts").max()).sort("symbol")
    committed = DAY0 + timedelta(days=done[-1])
    # every reported write is there whole; the one killed is there in some partitions only
    assert (days["ts"] >= committed).all()
    assert (days["ts"] <= committed + timedelta(days=1)).all()
    assert got.filter(pl.col("ts") <= committed).height == len(SYMBOLS) * (done[-1] + 1)
    # the next write completes it; a fold keeps every row
    lake.upsert(_bars(SYMBOLS, done[-1] + 1, 1, DAY0 + timedelta(days=500)))
    before = lake.read(SYMBOLS, D1).select("symbol", "ts")
    lake.compact()
    assert not lake.delta_files()
    after = ParquetLake(root, _settings()).read(SYMBOLS, D1).select("symbol", "ts")
    assert_frame_equal(after, before)
    assert after.height == len(SYMBOLS) * (done[-1] + 2)


def test_an_append_is_one_delta_file_whatever_the_partitions_it_touches(
    minute_lake: MinuteLake,
) -> None:
    lake, _ = minute_lake(0)
    assert lake.upsert(_minute(0)).inserted == len(SYMBOLS)
    deltas = lake.delta_files("1m")
    assert len(deltas) == 1  # 4 buckets, one file
    assert ParquetLake.read_file(deltas[0]).height == len(SYMBOLS)


def test_a_delete_after_a_fold_does_not_bring_back_crash_left_deltas(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    t0, t1 = DAY0 + timedelta(days=400), DAY0 + timedelta(days=401)
    lake.upsert(_bars(SYMBOLS, 0, 5, t0))
    lake.upsert(_bars(SYMBOLS, 5, 1, t1))
    assert _fold_dying_before_the_removal(lake, tmp_path / "kept") == 1
    assert lake.delete(D1, SYMBOLS[:10]) == 60
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        got = reader.read(SYMBOLS, D1)  # the folded delta stays folded
        assert got.height == 60 and got["symbol"].unique().sort().to_list() == SYMBOLS[10:]
    assert lake.delete(D1) == 60  # every bar: the bases stay (empty) while the delta does
    assert lake.read(SYMBOLS, D1).is_empty()
    lake.upsert(_bars(SYMBOLS, 9, 1, t1))
    assert lake.read(SYMBOLS, D1).height == len(SYMBOLS)


def test_a_writer_forgets_the_deltas_folded_away(minute_lake: MinuteLake) -> None:
    lake, _ = minute_lake(40, delta_files=4)
    lake.close()
    lake.upsert(_bars(SYMBOLS, 45, 1, DAY0 + timedelta(days=402), tf="1m"))
    assert len(lake._deltas) == len(lake.delta_files()) <= 5  # a stream holds no more
    assert lake.read(SYMBOLS, M1).height == len(SYMBOLS) * 46


def test_a_prepared_partition_takes_its_first_bars_as_a_delta(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    at = DAY0 + timedelta(days=400)
    symbols = ["AAA", "BBB", "CCC"]
    written = lake.prepare(symbols, M1, DAY0)
    buckets = {lake.bucket(s) for s in symbols}
    assert written == len(buckets) and lake.prepare(symbols, M1, DAY0) == 0  # once
    assert lake.read(symbols, M1).is_empty()  # an empty base holds no bars
    first = _bars(symbols, 0, 5, at, tf="1m")
    bases = lake.data_files("1m")  # in the format of `_settings`
    assert len(bases) == len(buckets)
    stamps = [p.stat().st_mtime_ns for p in bases]
    assert lake.upsert(first).inserted == first.height
    # the first bars went into a delta: the (empty) bases were not rewritten
    assert lake.delta_files("1m") and [p.stat().st_mtime_ns for p in bases] == stamps
    assert_frame_equal(lake.read(symbols, M1), _key_sorted(first))
    later = _bars(symbols, 5, 3, at + timedelta(seconds=1), tf="1m")
    lake.upsert(later)
    want = _key_sorted(pl.concat([first, later]))
    assert_frame_equal(lake.recent(symbols, M1, DAY0, DAY0 + timedelta(days=1)), want)
    lake.fold_timeframe(tmp_path / "silver" / "bars" / "timeframe=1m")
    assert not lake.delta_files("1m")
    assert_frame_equal(ParquetLake(tmp_path, _settings()).read(symbols, M1), want)


def _sql_rows(root: Path) -> int:
    from quantivista.storage.lake.sql import sql_query

    return int(sql_query(root, "SELECT count(*) FROM bars").item())


def test_a_merge_that_dies_before_removing_its_sources_counts_each_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minute_lake: MinuteLake
) -> None:
    lake, written = minute_lake(3)
    sources = lake.delta_files("1m")
    assert len(sources) == 3
    real_unlink = Path.unlink

    def crash(path: Path, missing_ok: bool = False) -> None:  # the process dies here
        if path in sources:
            raise KeyboardInterrupt
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        lake.merge_deltas(tmp_path / "silver" / "bars" / "timeframe=1m")
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert len(lake.delta_files("1m")) == 4  # the merged delta beside its sources
    want = _key_sorted(pl.concat(written))
    fresh = ParquetLake(tmp_path, _settings())
    for reader in (lake, fresh):
        assert_frame_equal(reader.read(SYMBOLS, M1), want)
        assert reader.stats()["rows"].sum() == want.height
        (live,) = reader.live_deltas("1m")  # the merged one; its sources are left out
        assert live[1].height == len(SYMBOLS) * 3
    assert _sql_rows(tmp_path) == want.height
    stats = fresh.stats().filter(pl.col("symbol") == "S03").row(0, named=True)
    assert stats["rows"] == 8 and stats["files"] == 2  # its base and the merged delta
    assert fresh.compact() == 4
    assert _sql_rows(tmp_path) == want.height
    assert_frame_equal(fresh.read(SYMBOLS, M1), want)


def test_sql_and_stats_skip_the_deltas_a_fold_left_behind(tmp_path: Path) -> None:
    lake = ParquetLake(tmp_path, _settings(delta_files=100))
    t0, t1 = DAY0 + timedelta(days=400), DAY0 + timedelta(days=401)
    base, added = _bars(SYMBOLS, 0, 10, t0), _bars(SYMBOLS, 10, 2, t1)
    lake.upsert(base)
    lake.upsert(added)
    assert _sql_rows(tmp_path) == base.height + added.height  # live deltas count
    assert _fold_dying_before_the_removal(lake, tmp_path / "kept") == 1
    want = base.height + added.height
    assert _sql_rows(tmp_path) == want
    for reader in (lake, ParquetLake(tmp_path, _settings())):
        assert reader.stats()["rows"].sum() == want
        assert reader.live_deltas() == []


def test_a_read_joins_a_symbols_pending_deltas_once(minute_lake: MinuteLake) -> None:
    lake, written = minute_lake(10)
    assert len(lake.delta_files()) == 10
    view = lake._partition(lake.partition_dir("1m", "S03", "2024-01"))
    assert isinstance(view, PartitionView)
    pieces = view.pieces_of("S03")
    assert [p.height for p in pieces] == [5, 10]  # the base's slice, then every delta's
    assert view.pieces_of("S03")[1] is pieces[1]  # joined once per view
    want = _key_sorted(pl.concat(written)).filter(pl.col("symbol") == "S03")
    assert_frame_equal(lake.read(["S03"], M1), want)
    lo, hi = DAY0 + timedelta(minutes=7), DAY0 + timedelta(minutes=11)
    inside = want.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
    assert_frame_equal(lake.read(["S03"], M1, lo, hi), inside)


def test_a_partitions_rows_join_base_and_deltas_in_key_order_without_a_sort(
    minute_lake: MinuteLake,
) -> None:
    # what a fold and a correction's merge take as the partition: every symbol's base rows
    # and then its delta rows, symbols in order, a symbol that is new in the deltas included
    lake, written = minute_lake(3)
    late = [s for s in ("A00", "S031", "S10A") if lake.bucket(s) == lake.bucket("S03")]
    assert len(late) == 3  # new symbols of S03's partition: first, among, between
    news = _bars(late, 8, 2, DAY0 + timedelta(days=401, seconds=9), tf="1m")
    lake.upsert(news)
    lake.upsert(_minute(3))
    directory = lake.partition_dir("1m", "S03", "2024-01")
    view = lake._partition(directory)
    assert isinstance(view, PartitionView) and len(view.deltas) == 5
    mine = [s for s in [*SYMBOLS, *late] if lake.bucket(s) == lake.bucket("S03")]
    every = pl.concat([*written, news, _minute(3)])
    want = _key_sorted(every.filter(pl.col("symbol").is_in(mine)))
    frame, index = view.joined()
    assert_frame_equal(frame, want)
    assert frame.n_chunks() == 1
    assert index == bars_module._Indexed(want).index  # where each symbol's rows are
    assert lake.fold(directory) == 5  # the fold writes that frame: reads stay exact
    assert_frame_equal(lake.read(mine, M1), want)


def test_merges_take_the_small_deltas_until_merged_ones_pile_up(
    tmp_path: Path, minute_lake: MinuteLake
) -> None:
    lake, written = minute_lake(0)
    tf_dir = tmp_path / "silver" / "bars" / "timeframe=1m"
    merged: list[Path] = []
    for round_ in range(bars_module._MERGED_DELTAS + 1):
        for k in range(3):
            batch = _minute(3 * round_ + k)
            lake.upsert(batch)
            written.append(batch)
        before = set(lake.delta_files())
        assert lake.merge_deltas(tf_dir) == (2 if round_ < bars_module._MERGED_DELTAS else 6)
        (new,) = set(lake.delta_files()) - before
        if round_ < bars_module._MERGED_DELTAS:  # the three small ones; merged ones stay
            assert set(merged) <= set(lake.delta_files())
            assert ParquetLake.read_file(new).height == 3 * len(SYMBOLS)
            merged.append(new)
        else:  # four merged ones and three small ones: all of them, in order
            assert lake.delta_files() == [new]
            assert ParquetLake.read_file(new).height == 15 * len(SYMBOLS)
        want = _key_sorted(pl.concat(written))
        for reader in (lake, ParquetLake(tmp_path, _settings())):
            assert_frame_equal(reader.read(SYMBOLS, M1), want)
            assert_frame_equal(reader.read(["S05"], M1), want.filter(pl.col("symbol") == "S05"))
            assert reader.stats()["rows"].sum() == want.height


def test_a_read_lists_again_when_a_listed_delta_vanishes(
    minute_lake: MinuteLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge or fold of another writer removes a delta between a reader's listing and its
    decode: the read lists again and answers exactly instead of failing."""
    lake, written = minute_lake(3)
    want = pl.concat(written).filter(pl.col("symbol") == "S03")
    fresh = ParquetLake(lake.root, _settings(delta_files=100, cache_mb=0))
    real, vanished = fresh._delta, []

    def flaky(path: str) -> object:
        if not vanished:  # the first decode finds its file gone once
            vanished.append(path)
            raise FileNotFoundError(path)
        return real(path)

    monkeypatch.setattr(fresh, "_delta", flaky)
    got = fresh.read(["S03"], Timeframe.parse("1m"))
    assert vanished
    assert_frame_equal(got.select(want.columns), want.sort("ts"), check_dtypes=False)
