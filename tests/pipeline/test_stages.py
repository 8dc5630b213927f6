"""The announce stage: one event per timeframe, naming the symbols it stored."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista.bus.events import BarsIngested, Event
from quantivista.pipeline import stages
from quantivista.pipeline.stages import distinct
from quantivista.platform import Platform


def _bars(p: Platform, symbols: list[str], timeframe: str = "1d") -> pl.DataFrame:
    cal = p.calendar()
    if timeframe == "1d":
        ts = cal.bar_starts("2024-02-01", "2024-02-29", "1d")
    else:
        ts = cal.bar_starts("2024-02-05", "2024-02-06", timeframe)
    n = ts.len()
    frames = [
        pl.DataFrame(
            {
                "symbol": symbol,
                "timeframe": timeframe,
                "ts": ts,
                "open": [10.0 + k + 0.01 * (i % 7) for i in range(n)],
                "high": [11.0 + k + 0.01 * (i % 7) for i in range(n)],
                "low": [9.0 + k + 0.01 * (i % 7) for i in range(n)],
                "close": [10.5 + k + 0.01 * (i % 7) for i in range(n)],
                "volume": [100.0 + i for i in range(n)],
            }
        )
        for k, symbol in enumerate(symbols)
    ]
    return pl.concat(frames)


def _ingested(p: Platform) -> list[BarsIngested]:
    events: list[Event] = []
    p.runtime.bus.subscribe("bars.>", events.append)
    return events  # type: ignore[return-value]


def test_a_symbol_with_every_row_rejected_is_not_announced(platform: Platform) -> None:
    events = _ingested(platform)
    bars = _bars(platform, ["AAA", "BBB", "CCC"])
    bars = bars.with_columns(
        low=pl.when(pl.col("symbol") == "BBB").then(-1.0).otherwise(pl.col("low"))
    )
    platform.write_bars(bars, source="test")
    ingested = [e for e in events if isinstance(e, BarsIngested)]
    assert len(ingested) == 1
    assert ingested[0].symbols == ["AAA", "CCC"]
    assert ingested[0].rows_written == bars.height * 2 // 3


def test_a_clean_batch_names_all_its_symbols_sorted(platform: Platform) -> None:
    events = _ingested(platform)
    bars = _bars(platform, ["CCC", "AAA", "BBB"])
    platform.write_bars(bars, source="test")
    (event,) = [e for e in events if isinstance(e, BarsIngested)]
    assert event.symbols == ["AAA", "BBB", "CCC"]
    assert event.timeframe == "1d"
    assert event.first_ts == datetime(2024, 2, 1, tzinfo=UTC)
    assert event.last_ts == datetime(2024, 2, 29, tzinfo=UTC)


def test_each_timeframe_of_a_batch_is_announced_with_its_own_span(platform: Platform) -> None:
    events = _ingested(platform)
    daily = _bars(platform, ["AAA"])
    hourly = _bars(platform, ["BBB", "AAA"], "1h")
    platform.write_bars(pl.concat([daily, hourly]), source="test")
    ingested = [e for e in events if isinstance(e, BarsIngested)]
    assert [e.timeframe for e in ingested] == ["1d", "1h"]
    assert [e.symbols for e in ingested] == [["AAA"], ["AAA", "BBB"]]
    assert ingested[1].first_ts == hourly["ts"].min()
    assert ingested[1].last_ts == hourly["ts"].max()


@given(st.lists(st.sampled_from(["A", "B", "C", None]), min_size=1, max_size=30))
def test_distinct_of_runs_is_the_sorted_unique(values: list[str | None]) -> None:
    column = pl.Series("symbol", values, dtype=pl.String)
    assert distinct(column) == column.unique().sort().to_list()


def test_one_symbol_rule_at_coercion_bad_rows_to_quarantine(platform: Platform) -> None:
    bars = pl.concat(
        [
            _bars(platform, [" aaa "]),
            _bars(platform, ["X\nY"]),
            _bars(platform, ["B" * 40]),
            _bars(platform, [""]),
        ]
    )
    n = bars.height // 4
    report = platform.write_bars(bars, source="test")
    assert (report.valid_records, report.invalid_records) == (n, 3 * n)
    assert report.rule_counts == {"invalid_symbol": 3 * n}
    assert platform.bars("AAA", start="2024-02-01", end="2024-02-29").height == n
    assert platform.bars(" aaa", start="2024-02-01", end="2024-02-29").height == n  # reads too
    held = platform.quarantine()
    assert held.filter(pl.col("rule") == "invalid_symbol").height == 3 * n
    reasons = set(held["reason"].to_list())
    assert "empty symbol" in reasons
    assert any("'\\n'" in r for r in reasons)
    assert any("longer than 32" in r for r in reasons)


def test_scores_kept_on_a_thread_beside_the_bars(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stages, "_OVERLAP_ROWS", 1)  # every batch takes the threaded path
    frame = _bars(platform, ["AAA", "BBB"])
    report = platform.write_bars(frame, source="t")
    assert report.invalid_records == 0
    assert platform.bars("AAA").height == frame.height // 2
    scores = platform.runtime.backend.scores.read()
    assert sorted(scores["symbol"].unique().to_list()) == ["AAA", "BBB"]
    assert scores.height == frame.height  # one score per symbol-day
