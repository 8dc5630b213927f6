"""The validator on real series (Lean, Alpha Vantage) with known and injected bad records."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.model.flags import QualityFlag
from quantivista.model.schema import coerce_actions, coerce_bars
from quantivista.providers.simulator.faults import inject_faults
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import get_calendar

from .conftest import av_daily, inject_spikes

CAL = get_calendar("XNYS")
SPIKE = int(QualityFlag.SPIKE)
SPLIT = int(QualityFlag.SPLIT_MISMATCH)


def _validator() -> Validator:
    return Validator(CAL)


def _flagged(df: pl.DataFrame, bits: int) -> pl.DataFrame:
    return df.filter((pl.col("quality_flags") & bits) != 0)


def test_lean_ibm_bad_low_is_flagged_as_spike_not_dropped(ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, actions = ibm
    result = _validator().validate(bars, job_id="t", actions=actions)
    bad = result.clean.filter(pl.col("ts") == datetime(2000, 7, 20, tzinfo=UTC))
    assert bad.height == 1
    assert bad["low"][0] == 88.0
    assert bad["quality_flags"][0] & SPIKE
    assert result.report.rule_counts["wick_spike"] >= 1
    assert result.clean.height == bars.height  # soft findings are stored, not quarantined


@pytest.mark.parametrize("name", ["ibm", "aapl"])
def test_recall_on_injected_hard_errors(name: str, request: pytest.FixtureRequest) -> None:
    bars, actions = request.getfixturevalue(name)
    damaged, labels = inject_faults(bars, rate=0.03, seed=11)
    result = _validator().validate(damaged, job_id="t", actions=actions)
    caught = labels.join(result.rejected.select("symbol", "ts").unique(), on=["symbol", "ts"])
    recall = caught.height / labels.height
    assert labels.height > 100
    assert recall >= 0.99
    # nothing is lost: every input row is stored, quarantined or counted as an exact repeat
    assert result.clean.height + result.rejected.height + result.exact_duplicates == (
        damaged.height
    )


@pytest.mark.parametrize("name", ["ibm", "aapl"])
def test_spike_precision_and_recall(name: str, request: pytest.FixtureRequest) -> None:
    bars, actions = request.getfixturevalue(name)
    spiked, labels = inject_spikes(bars, count=60, seed=3, protect=actions["ex_date"])
    result = _validator().validate(spiked, job_id="t", actions=actions)
    checked = pl.concat([result.clean, result.rejected.select(result.clean.columns)])
    # the close-spike rule only: wick spikes are the file's own bad prints
    close_spikes = checked.join(labels, on=["symbol", "ts"], how="semi")
    found = _flagged(close_spikes, SPIKE).height
    flagged = _flagged(checked, SPIKE)
    own_bad_prints = _validator().validate(bars, job_id="t", actions=actions)
    baseline = _flagged(own_bad_prints.clean, SPIKE).select("symbol", "ts")
    new_flags = flagged.join(baseline, on=["symbol", "ts"], how="anti")
    precision = found / max(new_flags.height, 1)
    assert found / labels.height >= 0.8  # 15% moves hide in volatile stretches
    assert precision >= 0.95


def test_no_spike_or_split_flags_on_known_action_days(aapl: tuple[pl.DataFrame, ...]) -> None:
    bars, actions = aapl
    days = actions["ex_date"]
    assert actions.filter(pl.col("action_type") == "split").height == 4
    with_actions = _validator().validate(bars, job_id="t", actions=actions)
    on_days = with_actions.clean.filter(pl.col("ts").dt.date().is_in(days.implode()))
    assert on_days.height == days.n_unique()
    assert _flagged(on_days, SPIKE | SPLIT).height == 0
    # without the actions, the real splits look like unexplained split-sized jumps
    blind = _validator().validate(bars, job_id="t")
    assert blind.report.rule_counts.get("split_jump", 0) >= 2


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT"])
def test_alpha_vantage_action_days_are_clean(symbol: str) -> None:
    bars, actions = av_daily(symbol)
    result = _validator().validate(bars, job_id="t", actions=actions)
    on_days = result.clean.filter(pl.col("ts").dt.date().is_in(actions["ex_date"].implode()))
    assert on_days.height == actions["ex_date"].n_unique()
    assert _flagged(on_days, SPIKE | SPLIT).height == 0


def test_split_without_price_jump_is_flagged(ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, actions = ibm
    fake = coerce_actions(
        pl.DataFrame(
            {
                "symbol": ["IBM"],
                "action_type": ["split"],
                "ex_date": [date(2005, 3, 1)],
                "ratio": [3.0],
            }
        )
    )
    result = _validator().validate(bars, job_id="t", actions=pl.concat([actions, fake]))
    hit = _flagged(result.clean, SPLIT)
    assert hit["ts"].dt.date().to_list() == [date(2005, 3, 1)]
    assert result.report.rule_counts["split_mismatch"] == 1


def test_stale_run_flags_the_repeats(ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, _ = ibm
    window = bars.slice(1000, 40)
    frozen = window.with_columns(
        [
            pl.when(pl.int_range(pl.len()).is_between(10, 16))
            .then(pl.col(c).gather(10))
            .otherwise(c)
            .alias(c)
            for c in ("open", "high", "low", "close", "volume")
        ]
    )
    result = _validator().validate(frozen, job_id="t")
    stale = _flagged(result.clean, int(QualityFlag.STALE))
    assert stale.height == 6  # bars 11..16 repeat bar 10
    assert stale["ts"].min() == window["ts"][11]


def test_out_of_order_rows_are_flagged_and_sorted(ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, actions = ibm
    part = bars.slice(0, 300)
    swapped = pl.concat([part.slice(0, 100), part.slice(150, 150), part.slice(100, 50)])
    result = _validator().validate(swapped, job_id="t", actions=actions)
    late = _flagged(result.clean, int(QualityFlag.OUT_OF_ORDER))
    assert late.height == 50
    assert result.clean["ts"].is_sorted()
    assert result.report.rule_counts["out_of_order"] == 50
    in_order = _validator().validate(part, job_id="t", actions=actions)
    # arrival order does not lower the score
    assert result.report.quality_score == in_order.report.quality_score


def test_duplicates_exact_are_counted_conflicts_rejected(ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, _ = ibm
    part = bars.slice(0, 50)
    copy = part.slice(5, 1)
    conflict = part.slice(9, 1).with_columns(pl.col("close") * 1.01)
    result = _validator().validate(pl.concat([part, copy, conflict]), job_id="t")
    assert result.exact_duplicates == 1
    assert result.rejected.height == 2
    assert set(result.rejected["rule"]) == {"duplicate_conflict"}
    assert result.clean.height == 49  # 52 rows - 1 exact repeat - 2 conflicting bars


def _minutes(days: list[str]) -> pl.DataFrame:
    ts = CAL.bar_starts(days[0], days[-1], "1m")
    n = len(ts)
    price = pl.Series(np.linspace(100, 101, n))
    return coerce_bars(
        pl.DataFrame(
            {
                "symbol": "MIN",
                "ts": ts,
                "open": price,
                "high": price + 0.01,
                "low": price - 0.01,
                "close": price,
                "volume": 100.0,
            }
        ),
        timeframe="1m",
    )


def test_completeness_of_minutes_handles_holiday_and_early_close() -> None:
    bars = _minutes(["2024-11-27", "2024-12-02"])
    per_day = bars.group_by(pl.col("ts").dt.date()).len().sort("ts")
    # Thanksgiving (11-28) has no session; the day after closes at 13:00 ET (210 minutes)
    assert per_day["len"].to_list() == [390, 210, 390]
    assert _validator().validate(bars, job_id="t").report.rule_counts.get("missing_bar") is None
    holes = bars.filter(~pl.int_range(pl.len()).is_in([5, 6, 400, 500]))
    result = _validator().validate(holes, job_id="t")
    assert result.report.rule_counts["missing_bar"] == 4
    missing = [i.ts for i in result.report.validation_errors if i.rule == "missing_bar"]
    assert sorted(missing) == sorted(bars["ts"].gather([5, 6, 400, 500]).to_list())


def test_missing_sessions_for_daily_bars(ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, _ = ibm
    part = bars.slice(0, 200)
    result = _validator().validate(part.filter(pl.int_range(pl.len()) != 77), job_id="t")
    assert result.report.rule_counts["missing_bar"] == 1
    assert result.report.quality_score < 1.0
    day = result.scores.filter(pl.col("missing") > 0)
    assert day["date"].to_list() == [part["ts"][77].date()]
    assert day["score"].to_list() == [0.0]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.01, 1e4, allow_nan=False),
            st.floats(0.01, 1e4, allow_nan=False),
            st.one_of(st.floats(-1, 1e4), st.just(float("nan"))),
            st.floats(-1e6, 1e6),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_every_row_is_stored_or_quarantined(rows: list[tuple[float, float, float, float]]) -> None:
    n = len(rows)
    a, b, c, vol = (list(x) for x in zip(*rows, strict=True))
    ts = CAL.bar_starts("2024-01-02", "2024-06-28", "1d").head(n)
    df = coerce_bars(
        pl.DataFrame(
            {
                "symbol": "HYP",
                "ts": ts[:n],
                "open": a,
                "high": b,
                "low": c,
                "close": a,
                "volume": vol,
            }
        ),
        timeframe="1d",
    )
    result = _validator().validate(df, job_id="h")
    assert result.clean.height + result.rejected.height + result.exact_duplicates == df.height
    bad_rows = df.filter(
        (pl.col("high") < pl.col("low")) | (pl.col("volume") < 0) | ~pl.col("low").is_finite()
    )
    assert bad_rows.join(result.clean, on="ts", how="semi").is_empty()
