"""Freshness: how far each series' latest bar lags the exchange calendar at a given instant."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.reference.calendars import TradingCalendar

__all__ = ["freshness"]

_SCHEMA = {
    "symbol": pl.String(),
    "last_ts": pl.Datetime("us", "UTC"),
    "expected_ts": pl.Datetime("us", "UTC"),
    "bars_behind": pl.Int64(),
    "fresh": pl.Boolean(),
}


def _us(value: datetime) -> int:
    return int(pl.Series([value]).dt.convert_time_zone("UTC").dt.epoch("us")[0])


def freshness(
    latest: pl.DataFrame,
    calendar: TradingCalendar,
    now: datetime,
    timeframe: TimeframeLike = "1d",
    max_behind: int = 0,
) -> pl.DataFrame:
    """Return per symbol the last bar, the bar the calendar expects by `now`, and the lag.

    `latest` has columns symbol and ts (the latest stored bar start, UTC). A daily bar is
    expected once its session has closed; an intraday bar once its interval has ended
    inside a session (nights, weekends, holidays and early closes add no lag). `fresh` is
    true when at most `max_behind` expected bars are missing at the end.
    """
    tf = Timeframe.parse(timeframe)
    if latest.is_empty():
        return pl.DataFrame(schema=_SCHEMA)
    sched = calendar.schedule
    opens = sched["open"].dt.epoch("us").to_numpy()
    closes = sched["close"].dt.epoch("us").to_numpy()
    now_us = _us(now)
    last_us = latest["ts"].dt.epoch("us").to_numpy()
    if not tf.is_intraday:
        days = sched["session"]
        closed = int(np.searchsorted(closes, now_us, side="right"))  # sessions closed by now
        have = np.searchsorted(days.to_numpy(), latest["ts"].dt.date().to_numpy(), side="right")
        behind = np.maximum(closed - have, 0)
        expected = (
            days.gather([max(closed - 1, 0)]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        )
        expected_col = pl.repeat(expected[0], latest.height, eager=True)
    else:
        step_us = int(tf.seconds or 60) * 1_000_000
        lengths = closes - opens
        before = np.concatenate([[0], np.cumsum(lengths)])

        def traded(t: np.ndarray) -> np.ndarray:
            """Trading microseconds from the calendar's first open to each instant."""
            i = np.clip(np.searchsorted(opens, t, side="right") - 1, 0, len(opens) - 1)
            out: np.ndarray = before[i] + np.clip(t - opens[i], 0, lengths[i])
            return out

        now_t = traded(np.array([now_us]))[0]
        done = traded(last_us + step_us)
        behind = np.maximum((now_t - done) // step_us, 0)
        # back from trading time to a wall instant: the end of the last expected bar
        end_t = done + behind * step_us
        j = np.clip(np.searchsorted(before, end_t, side="left") - 1, 0, len(opens) - 1)
        expected_us = opens[j] + (end_t - before[j]) - step_us
        expected_col = pl.Series(expected_us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.DataFrame(
        {
            "symbol": latest["symbol"],
            "last_ts": latest["ts"],
            "expected_ts": expected_col,
            "bars_behind": pl.Series(behind, dtype=pl.Int64),
        }
    ).with_columns(fresh=pl.col("bars_behind") <= max_behind)
