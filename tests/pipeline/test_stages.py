"""The announce stage: one event per timeframe, naming the symbols it stored."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista.bus.events import BarsIngested, Event
from quantivista.model.flags import QualityFlag
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


@given(st.lists(st.sampled_from(["A", "AB", "B", "b", "É", ""]), min_size=1, max_size=30))
def test_distinct_of_a_sorted_column_is_its_run_heads(values: list[str]) -> None:
    column = pl.Series("symbol", sorted(values), dtype=pl.String)  # the sorted fast path
    assert distinct(column) == sorted(set(values))


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


def _walk(p: Platform, start: str, end: str, jump_at_end: float = 1.0) -> pl.DataFrame:
    """Daily bars of SPK with small alternating moves; the last close times `jump_at_end`."""
    ts = p.calendar().bar_starts(start, end, "1d")
    n = ts.len()
    close = [100.0 * (1.0 + 0.004 * ((i * 7) % 5 - 2)) for i in range(n)]
    close[-1] *= jump_at_end
    return pl.DataFrame(
        {
            "symbol": "SPK",
            "timeframe": "1d",
            "ts": ts,
            "open": close,
            "high": [c * 1.001 for c in close],
            "low": [c * 0.999 for c in close],
            "close": close,
            "volume": [1000.0] * n,
        }
    )


def _flags_on(p: Platform, day: str, **read: object) -> int:
    bars = p.bars("SPK", "2024-01-01", "2024-12-31", **read)  # type: ignore[arg-type]
    row = bars.filter(pl.col("ts").dt.date() == datetime.fromisoformat(day).date())
    return int(row["quality_flags"].item())


def test_a_spike_on_the_newest_bar_is_pending_then_confirmed_by_the_next_bar(
    platform: Platform,
) -> None:
    platform.write_bars(_walk(platform, "2024-01-02", "2024-02-29", 50.0), source="test")
    pending = _flags_on(platform, "2024-02-29")
    assert pending & QualityFlag.SPIKE_PENDING and not pending & QualityFlag.SPIKE
    before = platform.runtime.clock.now()
    platform.runtime.clock.advance(3600)  # type: ignore[attr-defined]

    # the next bar returns to the usual level: the 50x close was a bad print
    report = platform.write_bars(_walk(platform, "2024-03-01", "2024-03-01"), source="test")
    confirmed = _flags_on(platform, "2024-02-29")
    assert confirmed & QualityFlag.SPIKE and not confirmed & QualityFlag.SPIKE_PENDING
    assert report.rule_counts.get("spike_confirmed") == 1
    assert _flags_on(platform, "2024-03-01") & (QualityFlag.SPIKE | QualityFlag.SPIKE_PENDING) == 0
    # the pending version stays readable as of before the decision
    assert _flags_on(platform, "2024-02-29", as_of=before) & QualityFlag.SPIKE_PENDING


def test_a_pending_spike_is_cleared_when_the_next_bar_stays_at_the_new_level(
    platform: Platform,
) -> None:
    platform.write_bars(_walk(platform, "2024-01-02", "2024-02-29", 3.3), source="test")
    assert _flags_on(platform, "2024-02-29") & QualityFlag.SPIKE_PENDING
    # the next bar stays at the new level: a real move, not a bad print
    level = _walk(platform, "2024-03-01", "2024-03-01").with_columns(
        pl.col("open", "high", "low", "close") * 3.3
    )
    report = platform.write_bars(level, source="test")
    cleared = _flags_on(platform, "2024-02-29")
    assert cleared & (QualityFlag.SPIKE | QualityFlag.SPIKE_PENDING) == 0
    assert report.rule_counts.get("spike_cleared") == 1
    # the same spike in the middle of one batch is flagged at once
    both = pl.concat(
        [
            _walk(platform, "2024-04-01", "2024-04-30", 50.0),
            _walk(platform, "2024-05-01", "2024-05-03"),
        ]
    )
    platform.write_bars(both, source="test")
    assert _flags_on(platform, "2024-04-30") & QualityFlag.SPIKE


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


def test_on_bars_sees_the_bars_stored_before_the_bookkeeping(platform: Platform) -> None:
    bars = _bars(platform, ["AAA", "BBB"])
    bars = bars.with_columns(
        low=pl.when(pl.col("symbol") == "BBB").then(-1.0).otherwise(pl.col("low"))
    )
    runtime = platform.runtime
    seen: list[tuple[int, int, int]] = []

    def on_bars(clean: pl.DataFrame) -> None:
        first, last = bars["ts"].min(), bars["ts"].max()
        assert isinstance(first, datetime) and isinstance(last, datetime)
        stored = runtime.backend.bars.read(["AAA", "BBB"], "1d", first, last + (last - first))
        seen.append((clean.height, stored.height, runtime.backend.quarantine.list().height))

    stored = runtime.runner.write(
        bars, source="test", batch_id=stages.BatchId("j"), timeframe="1d", on_bars=on_bars
    )
    half = bars.height // 2
    # the clean bars were readable when the hook ran; the quarantine was written after it
    assert seen == [(half, half, 0)]
    assert stored.quarantined == half and runtime.backend.quarantine.list().height == half


@given(st.lists(st.sampled_from(["1m", "5m", "1d", None]), max_size=12))
def test_one_timeframe_names_the_timeframe_only_when_every_row_has_it(
    values: list[str | None],
) -> None:
    bars = pl.DataFrame({"timeframe": values}, schema={"timeframe": pl.String})
    one = values[0] if values and None not in values and len(set(values)) == 1 else None
    assert stages.one_timeframe(bars) == one
