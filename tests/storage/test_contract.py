"""The store contract, proven against every backend (lake and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import INGESTED_AT, MakeBars
from quantivista.errors import StorageError
from quantivista.model.schema import BAR_COLUMNS, coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import STATS_SCHEMA, BarStore, RetentionPolicy, apply_retention

D1 = Timeframe.parse("1d")
H1 = Timeframe.parse("1h")


def _day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_upsert_is_idempotent_and_keeps_knowledge_time_of_unchanged_rows(
    store: BarStore, make_bars: MakeBars
) -> None:
    bars = make_bars(3, 10)
    first = store.upsert(bars)
    assert (first.inserted, first.updated, first.unchanged) == (30, 0, 0)
    again = store.upsert(bars.with_columns(ingested_at=pl.lit(INGESTED_AT + timedelta(days=1))))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 30)
    later = INGESTED_AT + timedelta(days=2)
    fixed = bars.with_columns(
        close=pl.when(pl.int_range(pl.len()) < 2).then(pl.col("close") * 1.01).otherwise("close"),
        ingested_at=pl.lit(later),
        job_id=pl.lit("job-fix"),
    )
    stats = store.upsert(fixed)
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 2, 28)
    out = store.read(["SYM0", "SYM1", "SYM2"], D1)
    assert out.height == 30
    assert out.columns == list(BAR_COLUMNS)
    assert_frame_equal(out.select("symbol", "ts", "close"), fixed.select("symbol", "ts", "close"))
    changed = out.filter(pl.col("job_id") == "job-fix")
    assert changed.height == 2
    assert changed["ingested_at"].to_list() == [later, later]
    assert set(out.filter(pl.col("job_id") != "job-fix")["ingested_at"]) == {INGESTED_AT}


def test_duplicate_keys_in_one_batch_keep_the_last(store: BarStore, make_bars: MakeBars) -> None:
    bars = make_bars(1, 3)
    batch = pl.concat([bars, bars.head(1).with_columns(close=pl.lit(999.0))])
    stats = store.upsert(batch)
    assert stats.inserted == 3
    out = store.read(["SYM0"], D1)
    assert out.height == 3
    assert out["close"][0] == 999.0


def test_range_reads_by_symbols_time_and_columns(store: BarStore, make_bars: MakeBars) -> None:
    bars = make_bars(4, 20)
    store.upsert(bars)
    start, end = _day("2024-01-05"), _day("2024-01-12")
    out = store.read(["SYM1", "SYM3"], D1, start, end, columns=["symbol", "ts", "close"])
    want = bars.filter(
        pl.col("symbol").is_in(["SYM1", "SYM3"]) & (pl.col("ts") >= start) & (pl.col("ts") < end)
    ).select("symbol", "ts", "close")
    assert out.columns == ["symbol", "ts", "close"]
    assert_frame_equal(out, want)
    assert out["ts"].min() == start  # start inclusive
    assert end not in out["ts"].to_list()  # end exclusive
    only_close = store.read(["SYM0"], D1, columns=["close"])
    assert only_close.columns == ["close"] and only_close.height == 20
    empty = store.read(["NOPE"], D1)
    assert empty.is_empty() and empty.columns == list(BAR_COLUMNS)
    assert store.read(["SYM0"], H1).is_empty()
    with pytest.raises(StorageError):
        store.read(["SYM0"], D1, columns=["close", "bogus"])


def test_cross_sectional_read_many_symbols_one_day(store: BarStore, make_bars: MakeBars) -> None:
    bars = make_bars(60, 5)
    store.upsert(bars)
    names = [f"SYM{i}" for i in range(60)]
    day = _day("2024-01-04")
    out = store.read(names, D1, day, day + timedelta(days=1))
    assert out.height == 60
    assert out["symbol"].to_list() == sorted(names)  # sorted by symbol, whatever was asked
    assert out["ts"].unique().to_list() == [day]
    want = bars.filter(pl.col("ts") == day).sort("symbol")
    assert_frame_equal(out.select("symbol", "close"), want.select("symbol", "close"))


def test_listing_and_statistics(store: BarStore, make_bars: MakeBars) -> None:
    daily = make_bars(["AAA", "BBB"], 7)
    hourly = make_bars(["CCC"], 3).with_columns(
        timeframe=pl.lit("1h"), ts=pl.col("ts") + timedelta(hours=15)
    )
    store.upsert(pl.concat([daily, hourly]))
    assert store.symbols() == ["AAA", "BBB", "CCC"]
    assert store.symbols(D1) == ["AAA", "BBB"]
    assert store.symbols(H1) == ["CCC"]
    stats = store.stats()
    assert stats.schema == STATS_SCHEMA
    assert stats.select("timeframe", "symbol", "rows").rows() == [
        ("1d", "AAA", 7),
        ("1d", "BBB", 7),
        ("1h", "CCC", 3),
    ]
    aaa = stats.row(0, named=True)
    assert aaa["first_ts"] == daily["ts"].min()
    assert aaa["last_ts"] == daily["ts"].max()
    assert aaa["bytes"] > 0 and aaa["files"] >= 1


def test_delete_and_retention(store: BarStore, make_bars: MakeBars) -> None:
    bars = make_bars(["AAA", "BBB"], 10)
    hourly = make_bars(["AAA"], 4).with_columns(timeframe=pl.lit("1h"))
    store.upsert(pl.concat([bars, hourly]))
    cut = _day("2024-01-08")  # sessions 2..5 and 8.. of January 2024
    removed = store.delete(D1, "AAA", before=cut, at=INGESTED_AT + timedelta(days=1))
    assert removed == 4
    left = store.read(["AAA", "BBB"], D1)
    assert left.filter(pl.col("symbol") == "AAA")["ts"].min() == cut
    assert left.filter(pl.col("symbol") == "BBB").height == 10
    now = _day("2024-01-20")
    dropped = apply_retention(store, RetentionPolicy({"1d": timedelta(days=10)}), now)
    assert dropped == {"1d": 6 + 2}  # before Jan 10: BBB Jan 2-9 (6 sessions), AAA Jan 8-9
    assert store.read(["AAA", "BBB"], D1)["ts"].min() == now - timedelta(days=10)
    assert store.read(["AAA"], H1).height == 4  # other timeframes keep their bars
    remaining = store.read(["AAA", "BBB"], D1).height
    assert remaining == 2 * 4  # Jan 10, 11, 12, 16
    assert store.delete(D1, None, None, at=now) == remaining
    assert store.read(["AAA", "BBB"], D1).is_empty()
    assert store.symbols(D1) == []


def test_as_of_reads_are_exact_across_corrections_inserts_and_deletes(
    store: BarStore, make_bars: MakeBars
) -> None:
    t0 = INGESTED_AT
    t1, t2, t3 = (t0 + timedelta(hours=h) for h in (1, 2, 3))
    v1 = make_bars(["AAA", "BBB"], 3, ingested_at=t0)  # Jan 2, 3, 4
    store.upsert(v1)
    jan3 = _day("2024-01-03")
    # t1: correct AAA Jan 3 and learn a new bar AAA Jan 5
    fix1 = v1.filter((pl.col("symbol") == "AAA") & (pl.col("ts") == jan3)).with_columns(
        close=pl.col("close") + 1.0, ingested_at=pl.lit(t1)
    )
    new_bar = make_bars(["AAA"], 1, start="2024-01-05", ingested_at=t1, seed=3)
    store.upsert(pl.concat([fix1, new_bar]))
    # t2: delete BBB Jan 4; t3: correct AAA Jan 3 again
    assert store.delete(D1, ["BBB"], before=None, at=t2) == 3
    store.upsert(
        v1.filter(pl.col("symbol") == "BBB").head(2).with_columns(ingested_at=pl.lit(t2))
    )  # BBB Jan 2-3 come back at t2, Jan 4 stays deleted
    fix2 = fix1.with_columns(close=pl.col("close") + 1.0, ingested_at=pl.lit(t3))
    store.upsert(fix2)

    def close_at(when: datetime | None) -> dict[tuple[str, str], float]:
        df = store.read(["AAA", "BBB"], D1, as_of=when) if when else store.read(["AAA", "BBB"], D1)
        return {
            (s, ts.date().isoformat()): c for s, ts, c in df.select("symbol", "ts", "close").rows()
        }

    base = {(s, ts.date().isoformat()): c for s, ts, c in v1.select("symbol", "ts", "close").rows()}
    aaa3 = ("AAA", "2024-01-03")
    assert close_at(t0 - timedelta(seconds=1)) == {}
    assert close_at(t0) == base
    assert close_at(t1 - timedelta(microseconds=1)) == base
    at_t1 = {**base, aaa3: base[aaa3] + 1.0, ("AAA", "2024-01-05"): new_bar["close"][0]}
    assert close_at(t1) == at_t1
    at_t2 = {k: v for k, v in at_t1.items() if k != ("BBB", "2024-01-04")}
    assert close_at(t2) == at_t2
    at_t3 = {**at_t2, aaa3: base[aaa3] + 2.0}
    assert close_at(t3) == at_t3
    assert close_at(None) == at_t3
    assert close_at(t3 + timedelta(days=365)) == at_t3
    # an as-of read returns whole bars with their knowledge time, sorted like plain reads
    full = store.read(["AAA"], D1, as_of=t1, columns=["ts", "ingested_at"])
    assert full.columns == ["ts", "ingested_at"]
    assert full["ingested_at"].to_list() == [t0, t1, t0, t1]
    assert full["ts"].is_sorted()
    ranged = store.read(["AAA"], D1, jan3, _day("2024-01-05"), as_of=t1)
    assert ranged["ts"].to_list() == [jan3, _day("2024-01-04")]


def test_prepare_stores_nothing_and_the_first_bars_land_as_usual(store: BarStore) -> None:
    """A live stream prepares a symbol's storage at its first trade: no bars appear, the
    first release is stored and read back like any write, and preparing again makes
    nothing new."""
    m1 = Timeframe.parse("1m")
    at = _day("2026-12-01T14:30:00")
    made = store.prepare(["AAA", "BBB"], m1, at)
    assert made >= 0
    assert store.read(["AAA", "BBB"], m1).is_empty() and store.symbols(m1) == []
    assert store.prepare(["AAA", "BBB"], m1, at) == 0  # ready already
    bars = pl.DataFrame(
        {"symbol": ["AAA", "BBB"], "timeframe": "1m", "ts": [at, at], "open": [1.0, 2.0],
         "high": [1.0, 2.0], "low": [1.0, 2.0], "close": [1.0, 2.0], "volume": [5.0, 6.0],
         "provider": "p", "quality_flags": 0, "ingested_at": INGESTED_AT, "job_id": "j"},
    ).with_columns(pl.col("quality_flags").cast(pl.UInt32))  # fmt: skip
    stats = store.upsert(coerce_bars(bars))
    assert (stats.inserted, stats.updated) == (2, 0)
    out = store.read(["AAA", "BBB"], m1)
    assert out.select("symbol", "ts", "close").rows() == [("AAA", at, 1.0), ("BBB", at, 2.0)]


def test_recent_answers_what_read_answers(store: BarStore) -> None:
    """`recent` (a writer's validation history) returns the rows a read of the span returns,
    whichever way a backend answers it: base rows, appended ones, a span cutting both."""
    m1 = Timeframe.parse("1m")
    at = _day("2026-12-01T14:30:00")
    store.prepare(["AAA", "BBB"], m1, at)
    for minute in range(3):  # three small writes: appends after the first
        ts = at + timedelta(minutes=minute)
        bars = pl.DataFrame(
            {"symbol": ["AAA", "BBB"], "timeframe": "1m", "ts": [ts, ts],
             "open": [1.0 + minute, 2.0], "high": [1.0 + minute, 2.0], "low": [1.0, 2.0],
             "close": [1.0, 2.0], "volume": [5.0, 6.0], "provider": "p", "quality_flags": 0,
             "ingested_at": INGESTED_AT, "job_id": "j"},
        ).with_columns(pl.col("quality_flags").cast(pl.UInt32))  # fmt: skip
        store.upsert(coerce_bars(bars))
    for symbols, lo, hi in [
        (["AAA", "BBB"], at - timedelta(hours=1), at + timedelta(hours=1)),
        (["BBB"], at + timedelta(minutes=1), at + timedelta(minutes=3)),
        (["AAA", "CCC"], at, at + timedelta(minutes=2)),
    ]:
        want = store.read(symbols, m1, lo, hi)
        assert want.height  # the case reads rows
        assert_frame_equal(store.recent(symbols, m1, lo, hi), want)
