"""Session-true rollups on vendor minute data with pre- and post-market minutes (issue 19).

The QVX fixtures (tests/fixtures/intraday, made by make_fixtures.py) are one tape in the
formats of Polygon (1-minute aggregates) and Alpha Vantage (intraday CSV, extended_hours=
true), with the vendor's own regular-session daily (Alpha Vantage) and session-aligned hourly
(Yahoo 60m) bars. TSLA 2021-11-22 and AAPL 2023-01-31 are real recorded responses.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.errors import InvalidInputError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.processing.rollup import rollup
from quantivista.providers import alpha_vantage, polygon, yahoo
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar, get_calendar

FIXTURES = Path(__file__).parents[1] / "fixtures"
INTRADAY = FIXTURES / "intraday"
OHLCV = ["ts", "open", "high", "low", "close", "volume"]
OUTSIDE = int(QualityFlag.OUTSIDE_SESSION)


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return get_calendar("XNYS")


def _polygon() -> pl.DataFrame:
    body = (INTRADAY / "polygon_aggs_QVX_1minute_extended.json").read_bytes()
    return polygon.parse_aggs(body, "QVX", "1m")[0]


def _alpha_vantage() -> pl.DataFrame:
    body = (INTRADAY / "alpha_vantage_intraday_QVX_1min_extended.csv").read_bytes()
    return alpha_vantage.parse_time_series_csv(body, "QVX")[0]


FEEDS = {"polygon": _polygon, "alpha_vantage": _alpha_vantage}


def _regular_only(bars: pl.DataFrame, cal: TradingCalendar) -> pl.DataFrame:
    table = cal.schedule.select(
        pl.col("session").alias("_d"), pl.col("open").alias("_o"), pl.col("close").alias("_c")
    )
    return (
        bars.with_columns(_d=cal.session_of(pl.col("ts")))
        .join(table, on="_d", maintain_order="left")
        .filter((pl.col("ts") >= pl.col("_o")) & (pl.col("ts") < pl.col("_c")))
        .select(bars.columns)
    )


@pytest.mark.parametrize("feed", sorted(FEEDS))
def test_extended_minutes_are_kept_and_flagged_not_quarantined(
    feed: str, cal: TradingCalendar
) -> None:
    bars = FEEDS[feed]()
    regular = _regular_only(bars, cal)
    assert bars.height > regular.height == 390 + 390 + 210  # two full days, one half day
    result = Validator(cal).validate(bars, job_id="t")
    assert result.rejected.is_empty()
    assert result.clean.height == bars.height
    flagged = result.clean.filter((pl.col("quality_flags") & OUTSIDE) != 0)
    assert flagged.height == bars.height - regular.height
    # extended minutes make up for no missing regular minute: only the sessions the
    # fixture skips (2020-09-01..2020-11-25) are missing, minute for minute
    skipped = cal.session_table("2020-09-01", "2020-11-25")["minutes"].sum()
    assert result.report.rule_counts["missing_bar"] == skipped


@pytest.mark.parametrize("feed", sorted(FEEDS))
def test_daily_rollup_equals_the_vendors_regular_session_daily_bars(
    feed: str, cal: TradingCalendar
) -> None:
    minutes = Validator(cal).validate(FEEDS[feed](), job_id="t").clean
    body = (INTRADAY / "alpha_vantage_daily_QVX.json").read_bytes()
    vendor = alpha_vantage.parse_time_series(body, "QVX")[0]
    mine = rollup(minutes, cal, "1d")
    assert_frame_equal(mine.select(OHLCV), vendor.select(OHLCV))
    # the split day (4:1, 2020-08-31) opens at its 09:30 print, not the prior basis
    split_day = mine.filter(pl.col("ts").dt.date() == date(2020, 8, 31))
    assert split_day["open"][0] < 130 < 480 < mine["close"][0]
    assert (mine["quality_flags"] & OUTSIDE).max() == 0


@pytest.mark.parametrize("feed", sorted(FEEDS))
def test_hourly_rollup_equals_the_vendors_session_aligned_hours(
    feed: str, cal: TradingCalendar
) -> None:
    minutes = FEEDS[feed]()
    body = (INTRADAY / "yahoo_chart_QVX_60m_regular.json").read_bytes()
    vendor = yahoo.parse_chart(body, "QVX")[0]
    mine = rollup(minutes, cal, "1h")
    assert mine.height == vendor.height == 7 + 7 + 4  # 13:00 early close: 12:30-13:00 is short
    assert_frame_equal(mine.select(OHLCV), vendor.select(OHLCV))
    local = mine["ts"].dt.convert_time_zone("America/New_York").dt.strftime("%H:%M")
    assert local.unique().sort().to_list() == [f"{h:02d}:30" for h in range(9, 16)]


@pytest.mark.parametrize("feed", sorted(FEEDS))
@pytest.mark.parametrize("timeframe", ["5m", "15m", "30m", "1h", "1d"])
def test_rollups_with_extended_hours_equal_the_regular_session_rollups(
    feed: str, timeframe: str, cal: TradingCalendar
) -> None:
    bars = Validator(cal).validate(FEEDS[feed](), job_id="t").clean
    regular = _regular_only(bars, cal)
    assert regular.height < bars.height
    assert_frame_equal(rollup(bars, cal, timeframe), rollup(regular, cal, timeframe))


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h"])
def test_extended_rollups_add_pre_and_post_bars_that_never_span_the_open_or_close(
    timeframe: str, cal: TradingCalendar
) -> None:
    bars = Validator(cal).validate(_polygon(), job_id="t").clean
    regular = rollup(bars, cal, timeframe)
    extended = rollup(bars, cal, timeframe, session="extended")
    inside = extended.filter((pl.col("quality_flags") & OUTSIDE) == 0)
    assert_frame_equal(inside, regular)  # the regular bars are the same bars
    outside = extended.filter((pl.col("quality_flags") & OUTSIDE) != 0)
    assert outside.height > 0
    assert extended["volume"].sum() == bars["volume"].sum()  # every minute in one bar
    seconds = {"5m": 300, "15m": 900, "1h": 3600}[timeframe]
    step = timedelta(seconds=seconds)
    table = cal.schedule.select(
        pl.col("session").alias("_d"), pl.col("open").alias("_o"), pl.col("close").alias("_c")
    )
    edges = outside.with_columns(_d=cal.session_of(pl.col("ts"))).join(table, on="_d")
    ends = pl.col("ts") + step
    # a pre-market bar ends by the open, a post-market bar starts at or after the close
    pre_ok = ends <= pl.col("_o")
    post_ok = pl.col("ts") >= pl.col("_c")
    assert edges.select((pre_ok | post_ok).all()).item()
    # hours of the post-market start at the close: 16:00 (13:00 on the half day)
    if timeframe == "1h":
        post = edges.filter(post_ok)["ts"].dt.convert_time_zone("America/New_York")
        assert set(post.dt.minute()) == {0}
        pre = edges.filter(pre_ok)["ts"].dt.convert_time_zone("America/New_York")
        assert set(pre.dt.minute()) == {30}
    # no bar mixes the pre-split basis (~500) with the post-split one (~125)
    assert extended.select((pl.col("high") / pl.col("low")).max()).item() < 1.1


def test_daily_extended_stays_the_regular_session(cal: TradingCalendar) -> None:
    bars = _polygon()
    assert_frame_equal(rollup(bars, cal, "1d", session="extended"), rollup(bars, cal, "1d"))
    with pytest.raises(InvalidInputError):
        rollup(bars, cal, "1h", session="overnight")  # type: ignore[arg-type]


def _tsla() -> tuple[pl.DataFrame, dict[str, object]]:
    path = FIXTURES / "providers" / "yahoo" / "chart_TSLA_30m_prepost_2021-11-22.json"
    body = json.loads(path.read_text())["response"]["bodyJson"]
    bars = yahoo.parse_chart(json.dumps(body), "TSLA")[0]
    return bars, body["chart"]["result"][0]["meta"]


def test_recorded_yahoo_prepost_30m_rolls_up_to_the_regular_session(cal: TradingCalendar) -> None:
    bars, meta = _tsla()
    assert bars.height == 30  # 04:00-18:30 New York
    regular = _regular_only(bars, cal)
    assert regular.height == 13
    period = meta["tradingPeriods"]["regular"][0][0]  # type: ignore[index]
    assert regular["ts"].min() == datetime.fromtimestamp(period["start"], UTC)
    for timeframe in ("1h", "1d"):
        assert_frame_equal(rollup(bars, cal, timeframe), rollup(regular, cal, timeframe))
    day = rollup(bars, cal, "1d").row(0, named=True)
    assert day["open"] == regular["open"][0] == pytest.approx(1162.33, abs=1e-3)
    assert day["close"] == regular["close"][-1] == pytest.approx(1156.05, abs=1e-3)
    assert day["high"] == regular["high"].max()
    assert day["low"] == regular["low"].min()
    assert day["volume"] == regular["volume"].sum()
    hours = rollup(bars, cal, "1h")
    assert hours.height == 7
    # the 15:30 hour is the 15:30 half hour alone: nothing from 16:00 on
    last = hours.row(-1, named=True)
    assert last["volume"] == regular["volume"][-1]
    assert last["close"] == regular["close"][-1]


def test_recorded_alpha_vantage_15min_rolls_up_to_session_hours(cal: TradingCalendar) -> None:
    path = FIXTURES / "providers" / "alpha_vantage"
    body = (path / "time_series_intraday_15min_AAPL_2023-01-31_csv_excerpt.csv").read_bytes()
    bars = alpha_vantage.parse_time_series_csv(body, "AAPL")[0]
    hours = rollup(bars, cal, "1h")
    local = hours["ts"].dt.convert_time_zone("America/New_York").dt.strftime("%H:%M")
    assert local.to_list() == ["09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30"]
    last = hours.row(-1, named=True)
    assert last["volume"] == 1466236 + 6111148  # 15:30 and 15:45
    assert last["open"] == pytest.approx(142.322)
    assert last["close"] == pytest.approx(143.32)
    assert hours["volume"].sum() == bars["volume"].sum()


@settings(max_examples=30, deadline=None)
@given(
    day=st.sampled_from([date(2023, 11, 24), date(2023, 11, 27), date(2024, 3, 11)]),
    picks=st.lists(st.integers(0, 16 * 60 - 1), min_size=1, max_size=200, unique=True),
    seed=st.integers(0, 2**16),
)
def test_extended_minutes_never_change_the_regular_rollups(
    day: date, picks: list[int], seed: int
) -> None:
    # 2023-11-24 closes at 13:00; 2024-03-11 is the first session after the DST change
    cal = get_calendar("XNYS")
    four_am = datetime(day.year, day.month, day.day, 4, tzinfo=ZoneInfo("America/New_York"))
    stamps = sorted(four_am.astimezone(UTC) + timedelta(minutes=m) for m in picks)
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.002, len(stamps))))
    frame = pl.DataFrame(
        {"symbol": "HYP", "ts": stamps, "open": close, "high": close * 1.001,
         "low": close * 0.999, "close": close, "volume": rng.integers(1, 1000, len(stamps))}
    )  # fmt: skip
    bars = coerce_bars(frame, timeframe="1m", provider="t")
    regular = _regular_only(bars, cal)
    for timeframe in ("5m", "15m", "1h", "1d"):
        assert_frame_equal(rollup(bars, cal, timeframe), rollup(regular, cal, timeframe))
        if timeframe == "1d":
            continue
        extended = rollup(bars, cal, timeframe, session="extended")
        assert extended["volume"].sum() == bars["volume"].sum()
        inside = extended.filter((pl.col("quality_flags") & OUTSIDE) == 0)
        assert_frame_equal(inside, rollup(bars, cal, timeframe))
        # a pre/post bar ends by the open or starts at or after the close
        step = timedelta(seconds=Timeframe.parse(timeframe).seconds or 0)
        row = cal.session_table(day, day).row(0, named=True)
        for ts in extended.filter((pl.col("quality_flags") & OUTSIDE) != 0)["ts"]:
            assert ts + step <= row["open"] or ts >= row["close"]
