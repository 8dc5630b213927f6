"""Exchange calendars: sessions, early closes, bar grids and local session dates (XNYS)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from quantivista.errors import CalendarError
from quantivista.reference.calendars import TradingCalendar, get_calendar


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_get_calendar_is_cached_and_case_insensitive(xnys: TradingCalendar) -> None:
    assert get_calendar("xnys") is xnys
    assert xnys.mic == "XNYS"
    assert xnys.tz == "America/New_York"
    assert xnys.regular_minutes == 390
    assert xnys.first_session == date(1990, 1, 2)
    assert xnys.last_session.year >= datetime.now(UTC).year + 1


def test_unknown_mic_raises_calendar_error() -> None:
    with pytest.raises(CalendarError, match="unknown exchange calendar") as info:
        get_calendar("NOPE")
    assert info.value.context["mic"] == "NOPE"


@pytest.mark.parametrize(
    ("day", "is_session"),
    [
        ("2024-01-02", True),
        ("2024-07-03", True),
        ("2024-07-04", False),  # Independence Day
        ("2024-07-06", False),  # Saturday
        ("2024-11-28", False),  # Thanksgiving
        ("2024-11-29", True),
        ("2024-12-25", False),
        (date(2024, 3, 29), False),  # Good Friday
    ],
)
def test_is_session(xnys: TradingCalendar, day: str | date, is_session: bool) -> None:
    assert xnys.is_session(day) is is_session


def test_sessions_are_inclusive_dates(xnys: TradingCalendar) -> None:
    sessions = xnys.sessions("2024-07-01", "2024-07-08")
    assert sessions.dtype == pl.Date
    assert sessions.to_list() == [
        date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5), date(2024, 7, 8),
    ]  # fmt: skip
    assert len(xnys.sessions("2024-01-01", "2024-12-31")) == 252


def test_session_table_opens_and_closes_in_utc(xnys: TradingCalendar) -> None:
    table = xnys.session_table("2024-01-02", "2024-01-02").row(0, named=True)
    assert table["open"] == utc(2024, 1, 2, 14, 30)  # 09:30 EST
    assert table["close"] == utc(2024, 1, 2, 21, 0)  # 16:00 EST
    assert table["minutes"] == 390
    summer = xnys.session_table("2024-07-01", "2024-07-01").row(0, named=True)
    assert summer["open"] == utc(2024, 7, 1, 13, 30)  # 09:30 EDT


def test_early_closes_of_2024(xnys: TradingCalendar) -> None:
    early = xnys.early_closes("2024-01-01", "2024-12-31")
    assert early["session"].to_list() == [date(2024, 7, 3), date(2024, 11, 29), date(2024, 12, 24)]
    closes = dict(zip(early["session"].to_list(), early["close"].to_list(), strict=True))
    assert closes[date(2024, 7, 3)] == utc(2024, 7, 3, 17, 0)  # 13:00 EDT
    assert closes[date(2024, 11, 29)] == utc(2024, 11, 29, 18, 0)  # 13:00 EST
    assert early["minutes"].to_list() == [210, 210, 210]


def test_dates_outside_the_calendar_raise(xnys: TradingCalendar) -> None:
    with pytest.raises(CalendarError, match="outside the calendar's range") as info:
        xnys.sessions("1980-01-01", "1980-12-31")
    assert info.value.context["mic"] == "XNYS"
    with pytest.raises(CalendarError):
        xnys.sessions("2024-01-01", date(xnys.last_session.year + 5, 1, 1))


def test_bar_starts_one_minute_full_session(xnys: TradingCalendar) -> None:
    starts = xnys.bar_starts("2024-01-02", "2024-01-02", "1m")
    assert starts.dtype == pl.Datetime("us", "UTC")
    assert len(starts) == 390
    assert starts[0] == utc(2024, 1, 2, 14, 30)
    assert starts[-1] == utc(2024, 1, 2, 20, 59)
    assert starts.diff().drop_nulls().unique().to_list() == [timedelta(minutes=1)]


def test_bar_starts_one_minute_early_close(xnys: TradingCalendar) -> None:
    starts = xnys.bar_starts("2024-07-03", "2024-07-03", "1m")
    assert len(starts) == 210
    assert starts[0] == utc(2024, 7, 3, 13, 30)
    assert starts[-1] == utc(2024, 7, 3, 16, 59)
    assert len(xnys.bar_starts("2024-11-29", "2024-11-29", "1m")) == 210


def test_bar_starts_span_sessions_and_skip_holidays(xnys: TradingCalendar) -> None:
    starts = xnys.bar_starts("2024-07-03", "2024-07-05", "1m")
    assert len(starts) == 210 + 390
    assert starts.dt.date().unique().sort().to_list() == [date(2024, 7, 3), date(2024, 7, 5)]


def test_bar_starts_last_bar_of_a_session_may_be_shorter(xnys: TradingCalendar) -> None:
    hourly = xnys.bar_starts("2024-01-02", "2024-01-02", "1h")
    # 6.5 hours: six full bars and a half bar from 20:30
    assert hourly.to_list() == [utc(2024, 1, 2, h, 30) for h in range(14, 21)]
    assert len(xnys.bar_starts("2024-07-03", "2024-07-03", "1h")) == 4  # 3.5 hours
    assert len(xnys.bar_starts("2024-01-02", "2024-01-02", "5m")) == 78
    assert len(xnys.bar_starts("2024-01-02", "2024-01-02", "15m")) == 26


def test_bar_starts_daily_at_utc_midnight_of_each_session(xnys: TradingCalendar) -> None:
    daily = xnys.bar_starts("2024-07-01", "2024-07-08", "1d")
    assert daily.dtype == pl.Datetime("us", "UTC")
    assert daily.to_list() == [
        utc(2024, 7, 1),
        utc(2024, 7, 2),
        utc(2024, 7, 3),
        utc(2024, 7, 5),
        utc(2024, 7, 8),
    ]


def test_bar_starts_of_a_range_without_sessions_is_empty(xnys: TradingCalendar) -> None:
    assert len(xnys.bar_starts("2024-07-06", "2024-07-07", "1m")) == 0
    assert len(xnys.bar_starts("2024-07-06", "2024-07-07", "1d")) == 0


@pytest.mark.parametrize("timeframe", ["1w", "1mo", "2d"])
def test_bar_starts_refuses_timeframes_longer_than_a_day(
    xnys: TradingCalendar, timeframe: str
) -> None:
    with pytest.raises(CalendarError, match="intraday and daily"):
        xnys.bar_starts("2024-01-02", "2024-01-31", timeframe)


def test_session_of_maps_utc_instants_to_the_new_york_date(xnys: TradingCalendar) -> None:
    df = pl.DataFrame(
        {
            "ts": [
                utc(2024, 1, 2, 14, 30),  # 09:30 EST on the 2nd
                utc(2024, 1, 3, 1, 0),  # 20:00 EST on the 2nd: post-market, still the 2nd
                utc(2024, 1, 3, 5, 0),  # 00:00 EST on the 3rd
                utc(2024, 7, 3, 3, 59),  # 23:59 EDT on the 2nd
            ]
        },
        schema={"ts": pl.Datetime("us", "UTC")},
    )
    days = df.select(xnys.session_of(pl.col("ts")))["ts"].to_list()
    assert days == [date(2024, 1, 2), date(2024, 1, 2), date(2024, 1, 3), date(2024, 7, 2)]


def test_repr_names_the_range(xnys: TradingCalendar) -> None:
    assert repr(xnys).startswith("TradingCalendar('XNYS', 1990-01-02..")


@pytest.mark.parametrize(
    "tz",
    ["America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Lord_Howe", "Asia/Tokyo"],
)
def test_local_dates_equal_the_per_row_conversion(xnys: TradingCalendar, tz: str) -> None:
    import copy

    import numpy as np

    cal = copy.copy(xnys)
    cal.tz = tz  # Lord Howe moves its clocks by 30 minutes, Kolkata is UTC+05:30
    rng = np.random.default_rng(5)
    us = rng.integers(1_577_836_800_000_000, 1_735_689_600_000_000, 200_000)  # 2020-2024
    us[:100] = us[:100] // 900_000_000 * 900_000_000  # exactly on quarter hours (transitions)
    ts = pl.Series("ts", us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    want = pl.select(cal.session_of(pl.lit(ts))).to_series()
    got = cal.local_dates(ts)
    assert got.dtype == pl.Date
    assert (got == want).all()
    with_null = pl.concat([ts.head(3), pl.Series("ts", [None], dtype=ts.dtype)])
    assert cal.local_dates(with_null).to_list()[:3] == want.head(3).to_list()
    assert cal.local_dates(with_null).null_count() == 1
