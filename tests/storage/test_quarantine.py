"""Quarantine: rejected rows are kept with their reasons, per job, never dropped."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from quantivista.model.schema import QUARANTINE_POLARS_SCHEMA
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar
from quantivista.storage.lake.quarantine import ParquetQuarantineStore

MakeBars = Callable[..., pl.DataFrame]
AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> ParquetQuarantineStore:
    return ParquetQuarantineStore(tmp_path)


def rejected_rows(
    make_bars: MakeBars, cal: TradingCalendar, symbols: list[str], job_id: str | None = "job-1"
) -> pl.DataFrame:
    bars = make_bars(symbols, 4, job_id=job_id)
    bad = bars.with_columns(
        volume=pl.when(pl.int_range(pl.len()).over("symbol") == 1).then(-1.0).otherwise("volume")
    )
    return Validator(cal).validate(bad, job_id="v").rejected


def test_empty_store(store: ParquetQuarantineStore) -> None:
    assert store.count() == 0
    listed = store.list()
    assert listed.is_empty()
    assert listed.schema == QUARANTINE_POLARS_SCHEMA


def test_add_and_list_keep_rows_with_their_reasons(
    store: ParquetQuarantineStore, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    rejected = rejected_rows(make_bars, xnys, ["AAA", "BBB"])
    assert store.add(rejected, job_id="job-1", at=AT) == 2
    listed = store.list()
    assert listed.schema == QUARANTINE_POLARS_SCHEMA
    assert listed.height == 2
    assert listed["rule"].to_list() == ["negative_volume", "negative_volume"]
    assert listed["severity"].to_list() == ["error", "error"]
    assert all("volume is negative" in r for r in listed["reason"])
    assert listed["quarantined_at"].to_list() == [AT, AT]
    assert listed["volume"].to_list() == [-1.0, -1.0]
    assert listed.drop("quarantined_at").equals(rejected.sort("symbol", "ts"))
    assert store.count() == 2


def test_adding_nothing_writes_nothing(store: ParquetQuarantineStore) -> None:
    empty = pl.DataFrame(schema=QUARANTINE_POLARS_SCHEMA).drop("quarantined_at")
    assert store.add(empty, job_id="job-1", at=AT) == 0
    assert list(store.dir.rglob("*.parquet")) == []


def test_missing_job_ids_are_filled_from_the_batch(
    store: ParquetQuarantineStore, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    rejected = rejected_rows(make_bars, xnys, ["AAA"], job_id=None)
    store.add(rejected, job_id="job-9", at=AT)
    assert store.list()["job_id"].to_list() == ["job-9"]


def test_filter_by_job_and_symbol(
    store: ParquetQuarantineStore, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    store.add(rejected_rows(make_bars, xnys, ["AAA", "BBB"]), job_id="job-1", at=AT)
    store.add(
        rejected_rows(make_bars, xnys, ["BBB", "CCC"], job_id="job-2"),
        job_id="job-2",
        at=AT + timedelta(hours=1),
    )
    assert store.count() == 4
    assert store.list(job_id="job-1")["symbol"].to_list() == ["AAA", "BBB"]
    assert store.list(job_id="job-2")["symbol"].to_list() == ["BBB", "CCC"]
    bbb = store.list(symbols=["BBB"])
    assert bbb["job_id"].to_list() == ["job-1", "job-2"]  # oldest first
    assert store.list(symbols=["BBB"], job_id="job-2")["job_id"].to_list() == ["job-2"]
    assert store.list(job_id="job-3").is_empty()
    assert store.list(symbols=["ZZZ"]).is_empty()


def test_batches_of_one_job_accumulate(
    store: ParquetQuarantineStore, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    store.add(rejected_rows(make_bars, xnys, ["AAA"]), job_id="job-1", at=AT)
    store.add(rejected_rows(make_bars, xnys, ["BBB"]), job_id="job-1", at=AT + timedelta(minutes=1))
    listed = store.list(job_id="job-1")
    assert listed.height == 2
    assert listed["quarantined_at"].to_list() == [AT, AT + timedelta(minutes=1)]


def test_the_same_bad_bar_rejected_again_is_held_once(
    store: ParquetQuarantineStore, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    rows = rejected_rows(make_bars, xnys, ["AAA"])
    assert store.add(rows, job_id="job-1", at=AT) == 1
    assert store.add(rows, job_id="job-2", at=AT + timedelta(minutes=1)) == 0  # a re-ingest
    assert store.list()["job_id"].to_list() == ["job-1"]
    changed = rows.with_columns(pl.col("close") + 1)
    assert store.add(changed, job_id="job-3", at=AT) == 1  # another bad value is kept
    assert store.add(rows, job_id="rel", at=AT, dedupe=False) == 1  # a release re-checks it


def test_quarantine_survives_reopening(
    tmp_path: Path, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    ParquetQuarantineStore(tmp_path).add(rejected_rows(make_bars, xnys, ["AAA"]), job_id="j", at=AT)
    assert ParquetQuarantineStore(tmp_path).count() == 1
