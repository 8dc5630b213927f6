"""Exchange trading calendars (exchange-calendars), cached and exposed as Polars frames."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl

from quantivista.errors import CalendarError
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.timeutil import DateLike, to_date

__all__ = ["TradingCalendar", "get_calendar"]

# exchange-calendars defaults to the last 20 years; market history is longer than that
_CALENDAR_START = "1990-01-01"
_lock = threading.Lock()
_QUARTER_US = 900_000_000
_DAY_US = 86_400_000_000
_MAX_QUARTERS = 4_000_000  # about 114 years of quarter hours


class TradingCalendar:
    """Sessions, opens and closes of one exchange (ISO 10383 MIC), as Polars frames.

    Session dates are `pl.Date`; opens and closes are UTC timestamps. The whole schedule
    is loaded once per MIC and cached, so lookups are vectorized joins, not calendar calls.
    """

    def __init__(self, mic: str, native: Any) -> None:
        self.mic = mic
        self._native = native
        sched = native.schedule

        def utc_us(col: Any) -> Any:
            return col.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")

        self.schedule = pl.DataFrame(
            {
                "session": pl.Series(sched.index.to_numpy().astype("datetime64[D]")).cast(pl.Date),
                "open": utc_us(sched["open"]),
                "close": utc_us(sched["close"]),
            }
        ).with_columns(
            pl.col("open", "close").dt.replace_time_zone("UTC"),
            minutes=((pl.col("close") - pl.col("open")).dt.total_minutes()).cast(pl.Int32),
        )
        regular = self.schedule["minutes"].mode().sort()
        self.regular_minutes = int(regular[-1]) if len(regular) else 0
        self.tz = str(native.tz)
        self.first_session: date = self.schedule["session"][0]
        self.last_session: date = self.schedule["session"][-1]

    @property
    def native(self) -> Any:
        """Return the underlying `exchange_calendars.ExchangeCalendar`."""
        return self._native

    def _check(self, start: date, end: date) -> None:
        if start < self.first_session or end > self.last_session:
            raise CalendarError(
                "dates outside the calendar's range",
                mic=self.mic, start=str(start), end=str(end),
                first=str(self.first_session), last=str(self.last_session),
            )  # fmt: skip

    def sessions(self, start: DateLike, end: DateLike) -> pl.Series:
        """Return the session dates from `start` to `end`, both included."""
        s, e = to_date(start), to_date(end)
        self._check(s, e)
        return self.schedule.filter(pl.col("session").is_between(s, e))["session"]

    def session_table(self, start: DateLike, end: DateLike) -> pl.DataFrame:
        """Return sessions with their UTC open and close and length in minutes."""
        s, e = to_date(start), to_date(end)
        self._check(s, e)
        return self.schedule.filter(pl.col("session").is_between(s, e))

    def is_session(self, day: DateLike) -> bool:
        """Say whether the exchange trades on `day`."""
        d = to_date(day)
        return bool(self.schedule["session"].is_in([d]).any())

    def is_open(self, at: datetime) -> bool:
        """Say whether the regular session is open at `at` (aware; open <= at < close)."""
        if at.tzinfo is None:
            raise CalendarError("is_open needs an aware datetime", at=str(at))
        at = at.astimezone(UTC)
        hit = self.schedule.filter((pl.col("open") <= at) & (pl.col("close") > at))
        return hit.height > 0

    def early_closes(self, start: DateLike, end: DateLike) -> pl.DataFrame:
        """Return the sessions that close before the regular time (half days)."""
        return self.session_table(start, end).filter(pl.col("minutes") < self.regular_minutes)

    def bar_starts(self, start: DateLike, end: DateLike, timeframe: TimeframeLike) -> pl.Series:
        """Return every expected bar start (UTC) for `timeframe` between two dates.

        Daily bars start at 00:00 UTC of the session date; intraday bars tile each session
        from its open and the last bar of a session may be shorter (an early close keeps
        its own grid).
        """
        tf = Timeframe.parse(timeframe)
        table = self.session_table(start, end)
        if not tf.is_intraday:
            if str(tf) != "1d":
                raise CalendarError(
                    "bar_starts covers intraday and daily bars only", timeframe=str(tf)
                )
            return table.select(
                pl.col("session").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts")
            )["ts"]
        step = tf.seconds
        assert step is not None
        step_us = step * 1_000_000
        opens = table["open"].dt.epoch("us").to_numpy()
        closes = table["close"].dt.epoch("us").to_numpy()
        counts = -(-(closes - opens) // step_us)  # ceiling division
        total = int(counts.sum())
        if total == 0:
            return pl.Series("ts", [], dtype=pl.Datetime("us", "UTC"))
        starts = np.repeat(opens, counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        values = starts + offsets * step_us
        return pl.Series("ts", values).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")

    def session_of(self, ts: pl.Expr) -> pl.Expr:
        """Return an expression mapping UTC instants to their local calendar date."""
        return ts.dt.convert_time_zone(self.tz).dt.date()

    def local_dates(self, ts: pl.Series) -> pl.Series:
        """`session_of` on a series, converting only one instant per quarter hour.

        UTC offsets change only at quarter-hour instants, so the offset of each quarter
        hour of the series' span, gathered by row, gives every row's local date; a per-row
        time-zone conversion costs ~50 ns a row. Spans too long for that (or nulls) take
        the plain conversion.
        """
        if ts.null_count() or ts.is_empty():
            return pl.select(self.session_of(pl.lit(ts))).to_series().alias(ts.name)
        us = ts.dt.epoch("us").to_numpy()
        quarter = us // _QUARTER_US
        lo, hi = int(quarter.min()), int(quarter.max())
        # before 1970 some zones still changed offset off the quarter hour (local mean time)
        if lo < 0 or hi - lo > _MAX_QUARTERS or hi - lo > us.size:
            return pl.select(self.session_of(pl.lit(ts))).to_series().alias(ts.name)
        grid = pl.Series(np.arange(lo, hi + 1, dtype=np.int64) * _QUARTER_US)
        stamps = grid.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        local = stamps.dt.convert_time_zone(self.tz).dt.replace_time_zone(None)
        offset = (local.dt.epoch("us") - grid).to_numpy()
        days = (us + offset[quarter - lo]) // _DAY_US
        return pl.Series(ts.name, days.astype(np.int32)).cast(pl.Date)

    def __repr__(self) -> str:
        return f"TradingCalendar({self.mic!r}, {self.first_session}..{self.last_session})"


@lru_cache(maxsize=32)
def _load(mic: str, end: str) -> TradingCalendar:
    import exchange_calendars as xcals

    try:
        with _lock:  # exchange-calendars builds lazily and is not thread safe on first use
            native = xcals.get_calendar(mic, start=_CALENDAR_START, end=end)
    except xcals.errors.InvalidCalendarName as exc:
        raise CalendarError("unknown exchange calendar", mic=mic) from exc
    return TradingCalendar(mic, native)


def get_calendar(mic: str = "XNYS", *, end: DateLike | None = None) -> TradingCalendar:
    """Return the cached trading calendar of an exchange by ISO 10383 MIC (e.g. "XNYS")."""
    # by default a calendar runs to the end of next year: "now" plus the usual look-ahead
    last = to_date(end) if end is not None else date(datetime.now(UTC).year + 1, 12, 31)
    end_text = last.isoformat()
    return _load(mic.upper(), end_text)
