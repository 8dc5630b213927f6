"""The 1-minute bad-print rule (quality.intraday): isolated reverting prints, not real moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.config import IntradaySettings
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import coerce_bars
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar, get_calendar
from quantivista.testing.minutes import inject_bad_prints, session_minutes_with_events

BIT = int(QualityFlag.BAD_PRINT)
OPEN = datetime(2024, 3, 12, 13, 30, tzinfo=UTC)  # 09:30 New York (EDT)


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return get_calendar("XNYS")


def _calm(n: int = 390, seed: int = 1, start: datetime = OPEN) -> dict[str, np.ndarray]:
    """A quiet liquid stock: 2 bp minute moves around 100, tight bars, even volume."""
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.0002, n))), 2)
    opn = np.concatenate([[close[0]], close[:-1]])
    return {
        "ts": int(start.timestamp() * 1e6) + np.arange(n, dtype=np.int64) * 60_000_000,
        "open": opn,
        "high": np.maximum(opn, close) + 0.02,
        "low": np.minimum(opn, close) - 0.02,
        "close": close,
        "volume": np.full(n, 5_000.0),
    }


def _bars(cols: dict[str, np.ndarray]) -> pl.DataFrame:
    df = pl.DataFrame({**cols, "symbol": "CALM"}).with_columns(
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    return coerce_bars(df, timeframe="1m", provider="t")


def _flagged(cal: TradingCalendar, bars: pl.DataFrame) -> list[int]:
    clean = Validator(cal).validate(bars, job_id="t").clean
    return np.flatnonzero((clean["quality_flags"].to_numpy() & BIT) != 0).tolist()


def _print(cols: dict[str, np.ndarray], at: int, kind: str, size: float) -> None:
    if kind == "high":
        cols["high"][at] = round(cols["high"][at] * (1 + size), 2)
    elif kind == "low":
        cols["low"][at] = round(cols["low"][at] * (1 - size), 2)
    else:
        cols["close"][at] = round(cols["close"][at] * (1 + size), 2)
        cols["high"][at] = max(cols["high"][at], cols["close"][at])
        cols["low"][at] = min(cols["low"][at], cols["close"][at])


@settings(max_examples=40, deadline=None)
@given(
    at=st.integers(1, 388),
    kind=st.sampled_from(["high", "low", "close_up", "close_down"]),
    size=st.floats(0.01, 0.2),
)
def test_an_isolated_print_is_flagged_exactly_where_it_is(at: int, kind: str, size: float) -> None:
    cal = get_calendar("XNYS")
    cols = _calm()
    signed = -size if kind == "close_down" else size
    _print(cols, at, kind.split("_")[0], signed)
    assert _flagged(cal, _bars(cols)) == [at]


def test_a_calm_day_has_no_bad_print(cal: TradingCalendar) -> None:
    assert _flagged(cal, _bars(_calm())) == []


@pytest.mark.parametrize("size", [0.02, 0.05])
def test_a_level_shift_that_stays_is_not_a_bad_print(cal: TradingCalendar, size: float) -> None:
    cols = _calm()
    for k in ("open", "high", "low", "close"):
        cols[k][200:] = np.round(cols[k][200:] * (1 + size), 2)
    cols["open"][200] = cols["close"][199]
    cols["low"][200] = min(cols["low"][200], cols["open"][200])
    assert _flagged(cal, _bars(cols)) == []


def test_a_print_that_does_not_revert_next_minute_is_not_flagged(cal: TradingCalendar) -> None:
    cols = _calm()
    _print(cols, 100, "high", 0.03)
    _print(cols, 101, "high", 0.03)  # two minutes up there: a real move, or not isolated
    assert _flagged(cal, _bars(cols)) == []


def test_auction_minutes_need_a_wider_print(cal: TradingCalendar) -> None:
    cols = _calm()
    _print(cols, 0, "high", 0.01)  # the opening cross away from the next minutes
    _print(cols, 389, "low", 0.01)  # the closing cross
    assert _flagged(cal, _bars(cols)) == []
    _print(cols, 0, "high", 0.05)
    assert _flagged(cal, _bars(cols)) == [0]


def test_a_wick_on_a_volume_surge_is_a_trade_not_a_bad_print(cal: TradingCalendar) -> None:
    cols = _calm()
    _print(cols, 150, "low", 0.03)
    assert _flagged(cal, _bars(cols)) == [150]
    cols["volume"][150] = 5 * 5_000.0
    assert _flagged(cal, _bars(cols)) == []


def test_outside_session_minutes_are_not_judged(cal: TradingCalendar) -> None:
    pre = _calm(60, seed=2, start=OPEN - timedelta(hours=1))  # 08:30-09:29
    regular = _calm()
    cols = {k: np.concatenate([pre[k], regular[k]]) for k in pre}
    _print(cols, 30, "high", 0.05)  # a pre-market print: flagged outside_session only
    _print(cols, 60 + 100, "high", 0.05)
    assert _flagged(cal, _bars(cols)) == [160]


def test_the_rule_reports_and_keeps_the_row(cal: TradingCalendar) -> None:
    cols = _calm()
    _print(cols, 42, "low", 0.04)
    result = Validator(cal).validate(_bars(cols), job_id="t")
    assert result.report.rule_counts["bad_print"] == 1
    assert result.rejected.is_empty()
    assert [i.ts for i in result.issues if i.rule == "bad_print"] == [result.clean["ts"][42]]
    assert "bad_print" in QualityFlag.names_of(int(result.clean["quality_flags"][42]))
    quiet = Validator(cal, intraday=IntradaySettings(bad_print_min_move=0.05))
    assert quiet.validate(_bars(cols), job_id="t").report.rule_counts.get("bad_print") is None


def test_recall_precision_and_clean_rate_on_synthetic_minutes(cal: TradingCalendar) -> None:
    # the numbers of perf/bad_prints.py on a smaller sample (README: the measured ranges)
    bars, wicks, _ = session_minutes_with_events(cal, "2024-01-02", "2024-02-09", 12, seed=5)
    clean = np.asarray(_flagged(cal, bars))
    assert clean.size / bars.height < 0.005  # the issue's target for clean days
    assert np.isin(np.flatnonzero(wicks), clean).mean() < 0.35  # real wicks mostly pass
    dirty, hit = inject_bad_prints(bars, 0.001, seed=3)
    flagged = np.zeros(bars.height, dtype=bool)
    flagged[_flagged(cal, dirty)] = True
    recall = (flagged & hit).sum() / hit.sum()
    precision = (flagged & hit).sum() / flagged.sum()
    assert recall > 0.8
    assert precision > 0.55


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=12),
        min_size=1,
        max_size=8,
    ).filter(lambda rows: len({len(r) for r in rows}) == 1)
)
def test_row_median_is_numpys_nanmedian(rows: list[list[float | None]]) -> None:
    from quantivista.quality.intraday import _row_median

    a = np.array([[np.nan if x is None else x for x in r] for r in rows], dtype=float)
    want = np.array([np.median(r[~np.isnan(r)]) if (~np.isnan(r)).any() else np.nan for r in a])
    np.testing.assert_allclose(_row_median(a), want, equal_nan=True)


def test_the_newest_minute_of_a_batch_that_stops_mid_session_is_not_judged(
    cal: TradingCalendar,
) -> None:
    cols = {k: v[:200] for k, v in _calm().items()}  # 09:30-12:49: the session goes on
    _print(cols, 199, "high", 0.1)
    _print(cols, 150, "high", 0.05)
    assert _flagged(cal, _bars(cols)) == [150]  # 199 may be a move: its next minute decides
    full = _calm()
    _print(full, 389, "high", 0.1)  # 15:59, the session's last minute: judged (x auction)
    assert _flagged(cal, _bars(full)) == [389]


def test_stored_minutes_before_a_batch_are_its_first_minutes_neighbours(
    cal: TradingCalendar,
) -> None:
    cols = _calm()
    _print(cols, 150, "low", 0.012)
    bars = _bars(cols)
    history, batch = bars.head(150), bars.slice(150)
    # alone, the batch's first minute (12:00) has no minute before it: judged one-sided
    # against the auction threshold (1.5%), a 1.2% print passes
    alone = Validator(cal).validate(batch, job_id="t")
    assert alone.report.rule_counts.get("bad_print") is None
    told = Validator(cal).validate(batch, job_id="t", history=history)
    assert told.report.rule_counts["bad_print"] == 1
    assert told.clean["quality_flags"][0] & BIT
    assert told.clean.height == batch.height  # history rows are context, not returned
