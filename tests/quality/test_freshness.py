"""Freshness of the latest bars against the exchange calendar."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from quantivista.quality.freshness import freshness
from quantivista.reference.calendars import get_calendar

CAL = get_calendar("XNYS")


def _latest(**last: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {"symbol": list(last), "ts": list(last.values())},
        schema={"symbol": pl.String, "ts": pl.Datetime("us", "UTC")},
    )


def test_daily_lag_counts_closed_sessions_only() -> None:
    latest = _latest(
        UP=datetime(2024, 11, 27, tzinfo=UTC),  # Wednesday before Thanksgiving
        LATE=datetime(2024, 11, 22, tzinfo=UTC),
    )
    # Friday 11-29 closes early at 18:00 UTC; at 17:00 it is still trading
    during = freshness(latest, CAL, datetime(2024, 11, 29, 17, tzinfo=UTC))
    assert during["bars_behind"].to_list() == [0, 3]  # LATE lacks 11-25, 11-26, 11-27
    assert during["fresh"].to_list() == [True, False]
    after = freshness(latest, CAL, datetime(2024, 11, 30, 12, tzinfo=UTC))
    assert after["bars_behind"].to_list() == [1, 4]
    assert after["expected_ts"][0] == datetime(2024, 11, 29, tzinfo=UTC)


def test_intraday_lag_skips_nights_and_early_close() -> None:
    # last minute bar 17:58 UTC on the early-close day: complete at 18:00 (close)
    latest = _latest(A=datetime(2024, 11, 29, 17, 59, tzinfo=UTC))
    monday_open = datetime(2024, 12, 2, 14, 30, tzinfo=UTC)
    assert freshness(latest, CAL, monday_open, "1m")["bars_behind"][0] == 0
    later = freshness(latest, CAL, datetime(2024, 12, 2, 14, 35, 30, tzinfo=UTC), "1m")
    assert later["bars_behind"][0] == 5
    assert later["expected_ts"][0] == datetime(2024, 12, 2, 14, 34, tzinfo=UTC)
    assert not later["fresh"][0]
