"""Session lookups of UTC microsecond timestamps in numpy, with per-process caches.

A streaming micro-batch asks the same calendar questions every minute (which local date,
which session, is it inside regular hours). The calendar's session table as numpy arrays
and each UTC day's quarter-hour offsets to local time are built once per process; a
call is then a few binary searches and gathers instead of ~10 small Polars steps.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import polars as pl

from quantivista.reference.calendars import TradingCalendar

__all__ = ["in_hours", "local_days", "session_closes", "session_marks"]

_DAY_US = 86_400_000_000
_QUARTER_US = 900_000_000
_QUARTERS = 96  # a day's quarter hours
_CACHED_DAYS = 8  # longer spans take the calendar's own conversion (one pass)


@lru_cache(maxsize=16)
def _session_arrays(calendar: TradingCalendar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(session day numbers, opens, closes in UTC microseconds), sorted by session."""
    s = calendar.schedule.sort("session")
    out = (
        s["session"].cast(pl.Int32).to_numpy(),
        s["open"].dt.epoch("us").to_numpy(),
        s["close"].dt.epoch("us").to_numpy(),
    )
    for a in out:
        a.flags.writeable = False  # shared by every later call
    return out


def session_closes(calendar: TradingCalendar) -> np.ndarray:
    """The sorted session closes of a calendar in UTC microseconds."""
    return _session_arrays(calendar)[2]


@lru_cache(maxsize=4096)
def _day_offsets(tz: str, day: int) -> np.ndarray:
    """UTC -> local offsets (us) of the 96 quarter hours of one UTC day, as
    `TradingCalendar.local_dates` takes them (offsets change only on quarter hours)."""
    grid = pl.Series(
        np.arange(day * _QUARTERS, (day + 1) * _QUARTERS, dtype=np.int64) * _QUARTER_US
    )
    stamps = grid.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    local = stamps.dt.convert_time_zone(tz).dt.replace_time_zone(None)
    out: np.ndarray = (local.dt.epoch("us") - grid).to_numpy()
    out.flags.writeable = False  # shared by every later call
    return out


def local_days(calendar: TradingCalendar, us: np.ndarray) -> np.ndarray:
    """The local date (days since 1970) of each UTC microsecond timestamp: the numbers of
    `TradingCalendar.local_dates`, from cached offsets when the span is a few days."""
    if not us.size:
        return np.zeros(0, dtype=np.int64)
    day = us // _DAY_US
    lo, hi = int(day.min()), int(day.max())
    if lo < 0 or hi - lo >= _CACHED_DAYS:
        ts = pl.Series(us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return calendar.local_dates(ts).cast(pl.Int32).to_numpy().astype(np.int64)
    if lo == hi:
        offsets = _day_offsets(calendar.tz, lo)
    else:
        offsets = np.concatenate([_day_offsets(calendar.tz, d) for d in range(lo, hi + 1)])
    out: np.ndarray = (us + offsets[us // _QUARTER_US - lo * _QUARTERS]) // _DAY_US
    return out


def session_marks(
    calendar: TradingCalendar, us: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether each instant's local date is a session, and that session's open and close
    (us; meaningless where it is not a session)."""
    known, opens, closes = _session_arrays(calendar)
    days = local_days(calendar, us)
    if not known.size:
        zero = np.zeros(us.size, dtype=np.int64)
        return np.zeros(us.size, dtype=bool), zero, zero
    if days.size and days[0] == days.min() == days.max():  # one local date: one search
        at = np.full(days.size, min(int(np.searchsorted(known, days[0])), known.size - 1))
    else:
        at = np.minimum(np.searchsorted(known, days), known.size - 1)
    return known[at] == days, opens[at], closes[at]


def in_hours(calendar: TradingCalendar, us: np.ndarray) -> np.ndarray:
    """Whether each instant lies in the regular hours of its local date's session."""
    hit, opens, closes = session_marks(calendar, us)
    out: np.ndarray = hit & (us >= opens) & (us < closes)
    return out
