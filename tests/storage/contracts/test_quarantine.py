"""The quarantine contract on every backend: rows kept with their reasons, never dropped."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import polars as pl
from polars.testing import assert_frame_equal

from quantivista.model.schema import QUARANTINE_POLARS_SCHEMA, RELEASE_POLARS_SCHEMA
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar
from quantivista.storage.contracts import Backend

from .conftest import Site

MakeBars = Callable[..., pl.DataFrame]
AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def rejected_rows(
    make_bars: MakeBars, cal: TradingCalendar, symbols: list[str], job_id: str | None = "job-1"
) -> pl.DataFrame:
    bars = make_bars(symbols, 4, job_id=job_id)
    bad = bars.with_columns(
        volume=pl.when(pl.int_range(pl.len()).over("symbol") == 1).then(-1.0).otherwise("volume")
    )
    return Validator(cal).validate(bad, job_id="v").rejected


def ruled(make_bars: MakeBars, rules: list[str], job_id: str = "job-1") -> pl.DataFrame:
    """Rejected rows of one symbol, one per rule text given (comma-separated rule lists)."""
    bars = make_bars(["RRR"], len(rules), job_id=job_id)
    return bars.with_columns(
        rule=pl.Series(rules), severity=pl.lit("error"), reason=pl.lit("because")
    )


def test_empty_store(backend: Backend) -> None:
    assert backend.quarantine.count() == 0
    listed = backend.quarantine.list()
    assert listed.is_empty()
    assert listed.schema == QUARANTINE_POLARS_SCHEMA
    assert backend.quarantine.releases().schema == RELEASE_POLARS_SCHEMA
    both = backend.quarantine.list(include_released=True)
    assert both.columns == [*QUARANTINE_POLARS_SCHEMA.names(), "released_at", "release_job_id"]


def test_add_and_list_keep_rows_with_their_reasons(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    rejected = rejected_rows(make_bars, xnys, ["AAA", "BBB"])
    assert backend.quarantine.add(rejected, job_id="job-1", at=AT) == 2
    listed = backend.quarantine.list()
    assert listed.schema == QUARANTINE_POLARS_SCHEMA
    assert listed.height == 2
    assert listed["rule"].to_list() == ["negative_volume", "negative_volume"]
    assert listed["severity"].to_list() == ["error", "error"]
    assert all("volume is negative" in r for r in listed["reason"])
    assert listed["quarantined_at"].to_list() == [AT, AT]
    assert listed["volume"].to_list() == [-1.0, -1.0]
    assert listed.drop("quarantined_at").equals(rejected.sort("symbol", "ts"))
    assert backend.quarantine.count() == 2


def test_adding_nothing_stores_nothing(backend: Backend) -> None:
    empty = pl.DataFrame(schema=QUARANTINE_POLARS_SCHEMA).drop("quarantined_at")
    assert backend.quarantine.add(empty, job_id="job-1", at=AT) == 0
    assert backend.quarantine.count() == 0
    assert backend.quarantine.list().is_empty()


def test_missing_job_ids_are_filled_from_the_batch(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    rejected = rejected_rows(make_bars, xnys, ["AAA"], job_id=None)
    backend.quarantine.add(rejected, job_id="job-9", at=AT)
    assert backend.quarantine.list()["job_id"].to_list() == ["job-9"]


def test_filter_by_job_and_symbol(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    store = backend.quarantine
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
    assert store.list(symbols=[]).height == 4  # an empty filter filters nothing


def test_the_job_filter_is_the_batch_that_rejected_the_rows(
    backend: Backend, make_bars: MakeBars
) -> None:
    rows = ruled(make_bars, ["r1"], job_id="job-of-the-bars")
    backend.quarantine.add(rows, job_id="job-of-the-batch", at=AT)
    assert backend.quarantine.list(job_id="job-of-the-batch")["job_id"].to_list() == [
        "job-of-the-bars"
    ]
    assert backend.quarantine.list(job_id="job-of-the-bars").is_empty()


def test_filter_by_one_rule_of_a_rule_list(backend: Backend, make_bars: MakeBars) -> None:
    backend.quarantine.add(ruled(make_bars, ["a", "a,b", "bb", "b,c"]), job_id="job-1", at=AT)
    assert backend.quarantine.list(rule="b")["rule"].to_list() == ["a,b", "b,c"]
    assert backend.quarantine.list(rule="a")["rule"].to_list() == ["a", "a,b"]
    assert backend.quarantine.list(rule="bb")["rule"].to_list() == ["bb"]
    assert backend.quarantine.list(rule="z").is_empty()


def test_batches_of_one_job_accumulate(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    backend.quarantine.add(rejected_rows(make_bars, xnys, ["AAA"]), job_id="job-1", at=AT)
    later = AT + timedelta(minutes=1)
    backend.quarantine.add(rejected_rows(make_bars, xnys, ["BBB"]), job_id="job-1", at=later)
    listed = backend.quarantine.list(job_id="job-1")
    assert listed.height == 2
    assert listed["quarantined_at"].to_list() == [AT, AT + timedelta(minutes=1)]


def test_the_same_bad_bar_rejected_again_is_held_once(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    store = backend.quarantine
    rows = rejected_rows(make_bars, xnys, ["AAA"])
    assert store.add(rows, job_id="job-1", at=AT) == 1
    assert store.add(rows, job_id="job-2", at=AT + timedelta(minutes=1)) == 0  # a re-ingest
    assert store.list()["job_id"].to_list() == ["job-1"]
    changed = rows.with_columns(pl.col("close") + 1)
    later = AT + timedelta(minutes=2)
    assert store.add(changed, job_id="job-3", at=later) == 1  # another bad value is kept
    recheck = AT + timedelta(minutes=5)
    assert store.add(rows, job_id="rel", at=recheck, dedupe=False) == 1  # a release re-checks
    assert store.count() == 3
    # a released row is no longer held: the same bad bar coming back is held again
    store.mark_released(store.list(), release_job_id="r", at=AT + timedelta(hours=1))
    assert store.count() == 0
    assert store.add(rows, job_id="job-4", at=AT + timedelta(hours=2)) == 1


def test_released_rows_are_hidden_but_kept_on_record(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    store = backend.quarantine
    store.add(rejected_rows(make_bars, xnys, ["AAA", "BBB", "CCC"]), job_id="job-1", at=AT)
    held = store.list()
    later = AT + timedelta(hours=2)
    assert (
        store.mark_released(held.filter(pl.col("symbol") == "BBB"), release_job_id="r-1", at=later)
        == 1
    )
    assert store.count() == 2
    assert store.list()["symbol"].to_list() == ["AAA", "CCC"]
    everything = store.list(include_released=True)
    assert everything["symbol"].to_list() == ["AAA", "BBB", "CCC"]
    assert everything["released_at"].to_list() == [None, later, None]
    assert everything["release_job_id"].to_list() == [None, "r-1", None]
    records = store.releases()
    assert records.schema == RELEASE_POLARS_SCHEMA
    assert records.select("symbol", "release_job_id").rows() == [("BBB", "r-1")]
    # releasing again keeps the first record; the row is not counted out twice
    store.mark_released(held.filter(pl.col("symbol") == "BBB"), release_job_id="r-2", at=later)
    assert store.count() == 2
    assert store.releases()["release_job_id"].to_list() == ["r-1"]
    assert store.mark_released(held.head(0), release_job_id="r-3", at=later) == 0


def test_quarantine_is_seen_by_another_instance(
    site: Site, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    site.open().quarantine.add(rejected_rows(make_bars, xnys, ["AAA"]), job_id="j", at=AT)
    assert site.open().quarantine.count() == 1


def test_concurrent_adds_from_threads_keep_every_row(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    def add(i: int) -> int:
        rows = rejected_rows(make_bars, xnys, [f"S{i:02d}", f"T{i:02d}"])
        return backend.quarantine.add(rows, job_id=f"job-{i}", at=AT + timedelta(seconds=i))

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(add, range(12))) == 24
    assert backend.quarantine.count() == 24
    assert backend.quarantine.list(job_id="job-7").height == 2


def test_concurrent_adds_of_the_same_rows_hold_them_once(
    backend: Backend, make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    rows = rejected_rows(make_bars, xnys, ["AAA", "BBB"])

    def add(i: int) -> int:
        return backend.quarantine.add(rows, job_id=f"job-{i}", at=AT + timedelta(seconds=i))

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(add, range(8))) == 2
    assert backend.quarantine.count() == 2


def test_lake_and_postgres_return_the_same_frames(
    twins: tuple[Backend, Backend], make_bars: MakeBars, xnys: TradingCalendar
) -> None:
    first = rejected_rows(make_bars, xnys, ["AAA", "BBB", "CCC"])
    second = ruled(make_bars, ["x,negative_volume", "y"], job_id="job-2")
    for b in twins:
        b.quarantine.add(first, job_id="job-1", at=AT)
        b.quarantine.add(second, job_id="job-2", at=AT + timedelta(minutes=5))
        held = b.quarantine.list()
        b.quarantine.mark_released(held.slice(1, 2), release_job_id="r", at=AT + timedelta(hours=1))
    lake, pg = (b.quarantine for b in twins)
    for kwargs in (
        {},
        {"include_released": True},
        {"symbols": ["BBB", "RRR"], "include_released": True},
        {"job_id": "job-2"},
        {"rule": "negative_volume"},
    ):
        assert_frame_equal(pg.list(**kwargs), lake.list(**kwargs))  # type: ignore[arg-type]
    assert_frame_equal(pg.releases(), lake.releases())
    assert pg.count() == lake.count() == 3
