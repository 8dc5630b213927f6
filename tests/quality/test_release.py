"""Quarantine end to end: rejected rows are kept, listed, released and then stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from quantivista.clock import TestClock
from quantivista.errors import InvalidInputError, NotFoundError
from quantivista.model.flags import QualityFlag
from quantivista.platform import Platform


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    clock = TestClock(datetime(2024, 7, 1, 12, tzinfo=UTC))
    p = Platform.open(tmp_path / "data", clock=clock)
    yield p
    p.close()


def _bars(ibm: tuple[pl.DataFrame, ...]) -> pl.DataFrame:
    bars, _ = ibm
    return bars.slice(3000, 120).drop("quality_flags", "ingested_at", "job_id")


def test_rejected_rows_are_listed_then_released_with_a_fix(
    platform: Platform, ibm: tuple[pl.DataFrame, ...]
) -> None:
    bars = _bars(ibm)
    broken = bars.with_columns(
        low=pl.when(pl.int_range(pl.len()) == 10).then(pl.col("high") + 1).otherwise("low"),
        volume=pl.when(pl.int_range(pl.len()) == 20).then(-5.0).otherwise("volume"),
    )
    report = platform.write_bars(broken, source="lean", timeframe="1d")
    assert report.invalid_records == 2
    held = platform.quarantine("IBM")
    assert held.height == 2
    assert set(held["rule"]) == {"ohlc_inconsistent", "negative_volume"}
    assert held["provider"].to_list() == ["lean", "lean"]
    assert held["job_id"].to_list() == [report.job_id] * 2
    assert platform.bars("IBM").height == 118

    fixed = bars.slice(10, 1).with_columns(timeframe=pl.lit("1d"))
    with pytest.raises(InvalidInputError):  # corrections must match held rows
        platform.release_quarantine(
            corrected=bars.slice(50, 1).with_columns(timeframe=pl.lit("1d"))
        )
    out = platform.release_quarantine(rule="ohlc_inconsistent", corrected=fixed)
    assert out.invalid_records == 0
    stored = platform.bars("IBM")
    assert stored.height == 119
    assert stored.filter(pl.col("ts") == bars["ts"][10])["low"][0] == bars["low"][10]
    assert platform.quarantine("IBM")["rule"].to_list() == ["negative_volume"]
    history = platform.quarantine("IBM", include_released=True)
    assert history.height == 2  # released rows stay on record
    assert history.filter(pl.col("released_at").is_not_null())["release_job_id"][0] == out.job_id


def test_release_with_demoted_rule_stores_the_row_flagged(
    platform: Platform, ibm: tuple[pl.DataFrame, ...]
) -> None:
    bars = _bars(ibm)
    broken = bars.with_columns(
        volume=pl.when(pl.int_range(pl.len()) == 20).then(-5.0).otherwise("volume")
    )
    platform.write_bars(broken, source="lean", timeframe="1d")
    again = platform.release_quarantine(symbols="IBM")  # the rule still rejects it
    assert again.invalid_records == 1
    assert platform.quarantine("IBM")["job_id"].to_list() == [again.job_id]
    done = platform.release_quarantine(job_id=again.job_id, demote=["negative_volume"])
    assert done.invalid_records == 0
    row = platform.bars("IBM").filter(pl.col("ts") == bars["ts"][20])
    assert row["quality_flags"][0] & int(QualityFlag.NEGATIVE_VOLUME)
    assert platform.quarantine().is_empty()
    with pytest.raises(NotFoundError):
        platform.release_quarantine(symbols="IBM")


def test_scores_and_reports_are_kept_per_job(
    platform: Platform, ibm: tuple[pl.DataFrame, ...]
) -> None:
    bars = _bars(ibm)
    first = platform.write_bars(bars.filter(pl.int_range(pl.len()) != 30), source="lean",
                                timeframe="1d")  # fmt: skip
    assert isinstance(platform.clock, TestClock)
    platform.clock.advance(60)
    second = platform.write_bars(bars.slice(30, 1), source="lean", timeframe="1d")
    scores = platform.quality_scores("IBM", job_id=first.job_id)
    assert scores.filter(pl.col("missing") == 1)["date"].to_list() == [bars["ts"][30].date()]
    latest = platform.quality_scores("IBM")
    assert latest.height == 120  # one per day; the re-delivered day's latest score wins
    assert latest.filter(pl.col("date") == bars["ts"][30].date())["job_id"][0] == second.job_id
    report = platform.quality_report(first.job_id)
    assert report.rule_counts["missing_bar"] == 1
    assert report.total_records == 119


def test_freshness_of_stored_series(platform: Platform, ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, _ = ibm
    platform.write_bars(bars.tail(10).drop("quality_flags", "ingested_at", "job_id"),
                        source="lean", timeframe="1d")  # fmt: skip
    fresh = platform.freshness("IBM")
    last = bars["ts"][-1]
    assert fresh["last_ts"][0] == last
    assert fresh["bars_behind"][0] > 100  # the fixture ends in 2021, the clock is in 2024
    assert not fresh["fresh"][0]


def test_small_batches_are_checked_with_stored_history(
    platform: Platform, ibm: tuple[pl.DataFrame, ...]
) -> None:
    bars = _bars(ibm)
    platform.write_bars(bars.head(60), source="lean", timeframe="1d")
    nxt = (
        bars.slice(60, 2)
        .with_columns(
            close=pl.when(pl.int_range(pl.len()) == 0)
            .then(pl.col("close") * 1.3)
            .otherwise("close")
        )
        .with_columns(high=pl.max_horizontal("high", "close"))
    )
    report = platform.write_bars(nxt, source="lean", timeframe="1d")
    assert report.rule_counts.get("spike") == 1  # 2 bars alone have no rolling window
    assert report.total_records == 2
    stored = platform.bars("IBM")
    assert stored.height == 62
    assert stored.filter(pl.col("ts") == bars["ts"][60])["quality_flags"][0] & int(
        QualityFlag.SPIKE
    )
