"""A correction of a symbol's latest bar rewrites the small delta file holding it (not the
partition's base): reads, as-of reads, SQL and stats stay exact, in this process and a
fresh one, before and after folds, after a crash between the copy and the removal, and over
random sequences of appends, corrections, merges and folds (against a model)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.config import StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.files import file_identity
from quantivista.storage.lake.sql import sql_query

from .conftest import lake_settings, ohlcv_bars

M1 = Timeframe.parse("1m")
DAY0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
SYMBOLS = [f"S{i:02d}" for i in range(20)]  # > 16: reads of all of them take the bulk path
KEY = ["symbol", "ts"]


def _settings(fmt: str = "arrow", **kw: object) -> StorageSettings:
    kw.setdefault("delta_files", 100)
    return lake_settings(buckets=4, daily_format=fmt, intraday_format=fmt, **kw)


def _bars(symbols: list[str], minutes: list[int], at: datetime, price: float = 100.0,
          flags: int = 0) -> pl.DataFrame:  # fmt: skip
    ts = [DAY0 + timedelta(minutes=m) for m in minutes]
    close = np.full(len(symbols) * len(ts), price) + np.tile(np.array(minutes, dtype=float),
                                                             len(symbols))  # fmt: skip
    frame = ohlcv_bars(symbols, ts, close, "1m", job_id=f"j{at:%H%M%S%f}", ingested_at=at)
    return frame.with_columns(quality_flags=pl.lit(flags, dtype=pl.UInt32))


def _upserted(model: pl.DataFrame, batch: pl.DataFrame) -> pl.DataFrame:
    """What an upsert leaves (the reference): new keys added, changed rows replaced,
    rows equal in value kept as they were (their knowledge time too)."""
    values = [c for c in batch.columns if c not in ("ingested_at", "job_id")]
    same = batch.join(model, on=values, how="semi", nulls_equal=True)
    changed = batch.join(same, on=KEY, how="anti")
    return pl.concat([model.join(changed, on=KEY, how="anti"), changed]).sort(KEY)


def _month(lake: ParquetLake, symbol: str) -> Path:
    return lake.base_path(lake.partition_dir("1m", symbol, "2024-01"))


def _sql_rows(root: Path) -> int:
    return int(sql_query(root, "SELECT count(*) FROM bars").item())


@pytest.fixture(params=["arrow", "parquet"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _stream(tmp_path: Path, fmt: str) -> tuple[ParquetLake, pl.DataFrame, list[datetime]]:
    """A lake of minutes 0-4 of every symbol (its base), then minutes 5 and 6 appended."""
    lake = ParquetLake(tmp_path, _settings(fmt))
    at = [DAY0 + timedelta(hours=1, seconds=s) for s in range(10)]
    model = pl.DataFrame()
    batches = [_bars(SYMBOLS, [0, 1, 2, 3, 4], at[0]), _bars(SYMBOLS, [5], at[1]),
               _bars(SYMBOLS, [6], at[2])]  # fmt: skip
    for k, batch in enumerate(batches):
        lake.upsert(batch)
        model = batch if k == 0 else _upserted(model, batch)
    return lake, model, at


def test_a_correction_of_the_latest_bar_rewrites_its_delta_not_the_base(
    tmp_path: Path, fmt: str
) -> None:
    lake, model, at = _stream(tmp_path, fmt)
    deltas = lake.delta_files("1m")
    base = _month(lake, "S05")
    before = file_identity(base)
    # the validator re-flags S05's and S06's minute 6 beside every symbol's minute 7
    fixed = _bars(["S05", "S06"], [6], at[3], flags=4)
    batch = pl.concat([fixed, _bars(SYMBOLS, [7], at[3])])
    stats = lake.upsert(batch)
    assert (stats.updated, stats.inserted, stats.unchanged) == (2, len(SYMBOLS), 0)
    assert file_identity(base) == before  # the month file was not rewritten
    after = lake.delta_files("1m")
    assert deltas[-1] not in after and len(after) == len(deltas) + 1  # copy + the append
    assert any("~" in p.name for p in after)  # the copy, named right after the original
    model = _upserted(model, batch)
    history = lake._history_files(tmp_path / "history", recursive=True)
    assert history  # the replaced versions, for as-of reads
    for reader in (lake, ParquetLake(tmp_path, _settings(fmt))):
        assert_frame_equal(reader.read(SYMBOLS, M1), model)  # bulk
        assert_frame_equal(reader.read(["S05"], M1), model.filter(pl.col("symbol") == "S05"))
        got = reader.recent(SYMBOLS, M1, DAY0, DAY0 + timedelta(hours=1))
        assert_frame_equal(got, model)
        # as-of: before the correction, the old flags; after it, the new
        then = reader.read(["S05"], M1, as_of=at[2] + timedelta(milliseconds=1))
        assert then["quality_flags"].to_list()[-1] == 0 and then.height == 7
        now = reader.read(["S06"], M1, as_of=at[3] + timedelta(milliseconds=1))
        assert now.filter(pl.col("ts") == DAY0 + timedelta(minutes=6))["quality_flags"].item() == 4
        assert reader.stats()["rows"].sum() == model.height
    assert _sql_rows(tmp_path) == model.height
    assert lake.compact() >= 1
    assert_frame_equal(lake.read(SYMBOLS, M1), model)
    assert _sql_rows(tmp_path) == model.height


def test_the_same_latest_bar_again_changes_nothing(tmp_path: Path) -> None:
    lake, model, at = _stream(tmp_path, "arrow")
    deltas = lake.delta_files("1m")
    again = _bars(["S03"], [6], at[3])  # equal values, a later knowledge time
    stats = lake.upsert(again)
    assert (stats.unchanged, stats.updated, stats.inserted) == (1, 0, 0)
    assert lake.delta_files("1m") == deltas  # nothing written
    assert_frame_equal(lake.read(SYMBOLS, M1), model)  # the stored knowledge time kept


def test_a_latest_bar_in_the_base_takes_the_merge_path(tmp_path: Path) -> None:
    lake, model, at = _stream(tmp_path, "arrow")
    lake.compact()  # the latest bars are in the base now
    before = file_identity(_month(lake, "S05"))
    fixed = _bars(["S05"], [6], at[3], flags=4)
    assert lake.upsert(fixed).updated == 1
    assert file_identity(_month(lake, "S05")) != before
    assert_frame_equal(lake.read(SYMBOLS, M1), _upserted(model, fixed))


def test_a_crash_between_the_copy_and_the_removal_counts_each_row_once(tmp_path: Path) -> None:
    lake, model, at = _stream(tmp_path, "arrow")
    original = lake.delta_files("1m")[-1]
    kept = tmp_path / "kept.arrow"
    shutil.copy(original, kept)
    fixed = _bars(["S05"], [6], at[3], flags=4)
    lake.upsert(fixed)
    shutil.copy(kept, original)  # as if the process died before removing it
    model = _upserted(model, fixed)
    fresh = ParquetLake(tmp_path, _settings())
    assert_frame_equal(fresh.read(SYMBOLS, M1), model)
    assert fresh.stats()["rows"].sum() == model.height
    assert _sql_rows(tmp_path) == model.height
    fresh.compact()
    assert_frame_equal(fresh.read(SYMBOLS, M1), model)


_STEP = st.one_of(
    st.tuples(st.just("append"), st.sets(st.sampled_from(SYMBOLS[:6]), min_size=1)),
    st.tuples(st.just("correct"), st.sets(st.sampled_from(SYMBOLS[:6]), min_size=1)),
    st.tuples(st.just("both"), st.sets(st.sampled_from(SYMBOLS[:6]), min_size=1)),
    st.tuples(st.just("merge"), st.just(frozenset())),
    st.tuples(st.just("compact"), st.just(frozenset())),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(_STEP, min_size=1, max_size=12))
def test_appends_and_corrections_of_latest_bars_read_as_a_model(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, frozenset[str]]]
) -> None:
    root = tmp_path_factory.mktemp("lake")
    lake = ParquetLake(root, _settings())
    symbols = SYMBOLS[:6]
    at = DAY0 + timedelta(hours=1)
    model = _bars(symbols, [0, 1], at)
    lake.upsert(model)
    last = dict.fromkeys(symbols, 1)  # each symbol's latest minute
    held = [(at, model)]  # what the lake held from each knowledge time on
    for k, (kind, chosen) in enumerate(steps, start=1):
        when = at + timedelta(seconds=k)
        batch: list[pl.DataFrame] = []
        if kind in ("correct", "both"):
            batch += [_bars([s], [last[s]], when, price=200.0 + k, flags=k) for s in sorted(chosen)]
        if kind in ("append", "both"):
            for s in sorted(chosen):
                last[s] += 1
                batch.append(_bars([s], [last[s]], when))
        if kind == "merge":
            lake.merge_deltas(root / "silver" / "bars" / "timeframe=1m")
        elif kind == "compact":
            lake.compact()
        else:
            frame = pl.concat(batch)
            lake.upsert(frame)
            model = _upserted(model, frame)
            held.append((when, model))
        assert_frame_equal(lake.read(symbols, M1), model)
    fresh = ParquetLake(root, _settings())
    assert_frame_equal(fresh.read(symbols, M1), model)
    assert fresh.stats()["rows"].sum() == model.height
    assert _sql_rows(root) == model.height
    assert_frame_equal(fresh.recent(symbols, M1, DAY0, DAY0 + timedelta(hours=1)), model)
    for reader in (lake, fresh):
        for when, then in held:  # as-of: exact at every knowledge time
            got = reader.read(symbols, M1, as_of=when + timedelta(milliseconds=500))
            assert_frame_equal(got.sort(KEY), then)
    fresh.compact()
    assert_frame_equal(fresh.read(symbols, M1), model)
