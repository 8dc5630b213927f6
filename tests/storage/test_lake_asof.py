"""As-of reads of one symbol from Arrow IPC files (`storage.lake.asof`): the versions the
general read picks, history files sorted with a symbol index, earlier history files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from tests.conftest import MakeBars

from quantivista.config import StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import HISTORY_POLARS_SCHEMA
from quantivista.storage.lake import asof as asof_module
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.files import IpcBase, atomic_write_ipc

D1 = Timeframe.parse("1d")
SYMBOLS = ["AAA", "BBB", "CCC"]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _lake(root: Path, **kw: Any) -> ParquetLake:
    return ParquetLake(root, StorageSettings(**{"buckets": 1, "write_threads": 1, **kw}))


def _stored(root: Path, bars: pl.DataFrame) -> ParquetLake:
    """A lake holding `bars` without delta files: every correction writes history."""
    lake = _lake(root, delta_files=0)
    lake.upsert(bars)
    return lake


def _fixed(bars: pl.DataFrame, add: float, hours: int) -> pl.DataFrame:
    """`bars` corrected: close + `add`, known `hours` after T0."""
    return bars.with_columns(close=pl.col("close") + add, ingested_at=pl.lit(T0 + hours * HOUR))


def _general(lake: ParquetLake, symbol: str, **kw: Any) -> pl.DataFrame:
    """The read without the Arrow path (what it must equal)."""
    keep = lake._as_of_one
    lake._as_of_one = lambda *a: None  # type: ignore[method-assign]
    try:
        return lake.read([symbol], D1, **kw)
    finally:
        lake._as_of_one = keep  # type: ignore[method-assign]


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record whether each Arrow as-of read answered (True) or declined (False)."""
    seen: list[bool] = []
    real = asof_module.read_as_of

    def spy(*args: Any) -> Any:
        found = real(*args)
        seen.append(found is not None)
        return found

    monkeypatch.setattr("quantivista.storage.lake.bars_reads.read_as_of", spy)  # its caller
    return seen


# a change: (symbol, first session, sessions, hour it is known at, delete instead)
changes = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.integers(0, 7),
        st.integers(1, 4),
        st.integers(1, 9),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=changes,
    hours=st.lists(st.integers(0, 11), min_size=1, max_size=4),
    window=st.tuples(st.integers(0, 7), st.integers(0, 7)),
)
def test_an_arrow_as_of_read_picks_the_versions_of_the_general_read(
    tmp_path_factory: pytest.TempPathFactory,
    make_bars: MakeBars,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[tuple[str, int, int, int, bool]],
    hours: list[int],
    window: tuple[int, int],
) -> None:
    root = tmp_path_factory.mktemp("lake")
    lake = _lake(root, delta_files=0)  # every write merges: history files, no deltas
    bars = make_bars(SYMBOLS, 8, ingested_at=T0)
    lake.upsert(bars)
    sessions = bars["ts"].unique().sort()
    for k, (symbol, first, n, hour, delete) in enumerate(sorted(steps, key=lambda s: s[3])):
        at = T0 + hour * HOUR + k * timedelta(minutes=1)
        if delete:
            lake.delete(D1, [symbol], before=sessions[min(first + n, 7)], at=at)
            continue
        mine = bars.filter(pl.col("symbol") == symbol).slice(first, n)
        lake.upsert(mine.with_columns(close=pl.col("close") + 1 + k, ingested_at=pl.lit(at)))
    seen = _spy(monkeypatch)
    fresh = _lake(root, cache_mb=0)
    lo, hi = sessions[min(window)], sessions[min(max(window), 7)]
    for hour in hours:
        at = T0 + hour * HOUR + timedelta(seconds=30)
        for symbol in SYMBOLS:
            for kw in ({}, {"start": lo, "end": hi}):
                got = fresh.read([symbol], D1, as_of=at, **kw)
                assert_frame_equal(got, _general(fresh, symbol, as_of=at, **kw))
    assert seen and all(seen)  # every read took the Arrow path


def test_history_files_are_sorted_with_a_symbol_index(tmp_path: Path, make_bars: MakeBars) -> None:
    bars = make_bars(SYMBOLS, 5, ingested_at=T0)
    lake = _stored(tmp_path, bars)
    lake.upsert(_fixed(bars.reverse(), 1, 1))  # every symbol, written in reverse order
    (path,) = lake._history_files(lake.history_root, True)
    with open(path, "rb") as handle:
        found = IpcBase.indexed(handle)
        assert found is not None
        assert found.runs == [(s, 5) for s in SYMBOLS]
        table = found.table()
    rows = pl.from_arrow(table)
    assert isinstance(rows, pl.DataFrame)
    assert_frame_equal(rows, rows.sort("symbol", "ts", "ingested_at"))
    assert_frame_equal(rows.drop("superseded_at"), bars)


def test_unindexed_history_files_of_earlier_versions_still_read(
    tmp_path: Path, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = make_bars(SYMBOLS, 5, ingested_at=T0)
    lake = _stored(tmp_path, bars)
    lake.upsert(_fixed(bars, 1, 2))
    # as session 7 wrote them: unsorted, no symbol index
    (path,) = lake._history_files(lake.history_root, True)
    old = ParquetLake.read_file(path).reverse()
    path.unlink()
    atomic_write_ipc(old, path.with_name("old.arrow"), lake.settings, {})
    seen = _spy(monkeypatch)
    fresh = _lake(tmp_path, cache_mb=0)
    got = fresh.read(["BBB"], D1, as_of=T0 + HOUR)
    assert seen == [False]  # declined: the general read answered
    assert_frame_equal(got, bars.filter(pl.col("symbol") == "BBB"))


def test_compaction_keeps_history_indexed_and_as_of_reads_exact(
    tmp_path: Path, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = make_bars(SYMBOLS, 5, ingested_at=T0)
    lake = _stored(tmp_path, bars)
    for k in (1, 2, 3):
        lake.upsert(_fixed(bars, k, k).filter(pl.col("symbol") != SYMBOLS[k - 1]))
    assert len(lake._history_files(lake.history_root, True)) == 3
    assert lake.compact() == 2
    seen = _spy(monkeypatch)
    fresh = _lake(tmp_path, cache_mb=0)
    for hour in range(5):
        at = T0 + hour * HOUR + timedelta(minutes=1)
        for symbol in SYMBOLS:
            got = fresh.read([symbol], D1, as_of=at)
            assert_frame_equal(got, _general(fresh, symbol, as_of=at))
    assert seen and all(seen)
    want = bars.filter(pl.col("symbol") == "CCC").with_columns(close=pl.col("close") + 2)
    then = fresh.read(["CCC"], D1, as_of=T0 + 2 * HOUR, columns=["ts", "close"])
    assert_frame_equal(then, want.select("ts", "close"))


def test_parquet_bases_and_deltas_take_the_general_read(
    tmp_path: Path, make_bars: MakeBars, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = make_bars(SYMBOLS, 5, ingested_at=T0)
    parquet = _lake(tmp_path / "p", daily_format="parquet", delta_files=0)
    parquet.upsert(bars)
    seen = _spy(monkeypatch)
    got = parquet.read(["AAA"], D1, as_of=T0 + HOUR)
    assert_frame_equal(got, bars.filter(pl.col("symbol") == "AAA"))
    assert seen == []  # a Parquet base: not tried
    arrow = _lake(tmp_path / "a")
    arrow.upsert(bars)
    later = make_bars(SYMBOLS, 7, ingested_at=T0 + HOUR).filter(pl.col("ts") > bars["ts"].max())
    arrow.upsert(later)  # appends: a delta file beside the base
    assert arrow.delta_files()
    fresh = _lake(tmp_path / "a", cache_mb=0)
    got = fresh.read(["BBB"], D1, as_of=T0 + 2 * HOUR)
    assert got.height == 7 and seen == []
    assert fresh.read(["BBB"], D1, as_of=T0 + timedelta(minutes=30)).height == 5


def test_history_schema_is_the_history_read(tmp_path: Path, make_bars: MakeBars) -> None:
    bars = make_bars(SYMBOLS, 3, ingested_at=T0)
    lake = _stored(tmp_path, bars)
    lake.upsert(_fixed(bars, 1, 1))
    found = _lake(tmp_path, cache_mb=0)._history("1d", ["AAA", "CCC"], None, None)
    assert found.schema == HISTORY_POLARS_SCHEMA
    assert found["symbol"].to_list() == ["AAA"] * 3 + ["CCC"] * 3
