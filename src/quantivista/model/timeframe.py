"""Bar timeframes: `1m`, `5m`, `15m`, `1h`, `1d`, `1w`, `1mo` and any multiple of those units."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Literal

from quantivista.errors import InvalidTimeframeError

__all__ = ["Timeframe", "TimeframeLike"]

Unit = Literal["s", "m", "h", "d", "w", "mo"]
_PATTERN = re.compile(
    r"^\s*(\d+)\s*(s|secs?|m|mins?|h|hours?|d|days?|w|wks?|weeks?|mo|mons?|months?)\s*$", re.I
)
_ALIASES: dict[str, Unit] = {
    "s": "s", "sec": "s",
    "m": "m", "min": "m",
    "h": "h", "hour": "h",
    "d": "d", "day": "d",
    "w": "w", "wk": "w", "week": "w",
    "mo": "mo", "mon": "mo", "month": "mo",
}  # fmt: skip
_SECONDS: dict[Unit, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ORDER: dict[Unit, int] = {"s": 0, "m": 1, "h": 2, "d": 3, "w": 4, "mo": 5}


@dataclass(frozen=True, slots=True, order=False)
class Timeframe:
    """A bar length: a positive multiple of a unit. `str(tf)` is the canonical spelling."""

    multiple: int
    unit: Unit

    def __post_init__(self) -> None:
        if self.multiple <= 0:
            raise InvalidTimeframeError(
                "a timeframe needs a positive multiple", value=self.multiple
            )
        if self.unit not in _ORDER:
            raise InvalidTimeframeError("unknown timeframe unit", value=self.unit)

    @staticmethod
    def parse(value: TimeframeLike) -> Timeframe:
        """Parse `"1m"`, `"15min"`, `"1h"`, `"1d"`, `"1wk"`, `"1mo"`; a Timeframe passes through."""
        if isinstance(value, Timeframe):
            return value
        return _parse(str(value))

    def __str__(self) -> str:
        return f"{self.multiple}{self.unit}"

    @property
    def is_intraday(self) -> bool:
        """True for bars shorter than a session (seconds, minutes, hours)."""
        return self.unit in ("s", "m", "h")

    @property
    def seconds(self) -> int | None:
        """Length in seconds, or None for calendar months (variable length)."""
        if self.unit == "mo":
            return None
        return self.multiple * _SECONDS[self.unit]

    @property
    def duration(self) -> timedelta | None:
        """Length as a timedelta, or None for months."""
        secs = self.seconds
        return None if secs is None else timedelta(seconds=secs)

    @property
    def polars_every(self) -> str:
        """The interval string Polars' `group_by_dynamic` and `dt.truncate` understand."""
        unit = {"s": "s", "m": "m", "h": "h", "d": "d", "w": "w", "mo": "mo"}[self.unit]
        return f"{self.multiple}{unit}"

    @property
    def partition_period(self) -> Literal["month", "all"]:
        """How the lake partitions bars of this timeframe within a symbol.

        Intraday bars are split by month (about 8,000 one-minute bars a file); daily and
        longer bars keep a symbol's whole history in one file so a decade reads in one go.
        """
        return "month" if self.is_intraday else "all"

    def sort_key(self) -> tuple[int, int]:
        """Order timeframes from finest to coarsest."""
        secs = self.seconds
        return (secs if secs is not None else self.multiple * 31 * 86400, _ORDER[self.unit])


TimeframeLike = Timeframe | str


@lru_cache(maxsize=256)
def _parse(text: str) -> Timeframe:
    match = _PATTERN.match(text)
    if match is None:
        raise InvalidTimeframeError(
            "cannot parse timeframe; use forms like 1m, 5m, 15m, 1h, 1d, 1w, 1mo", value=text
        )
    multiple, unit_text = match.groups()
    unit_key = unit_text.lower()
    # a lone "M" means month in some vendors' vocabularies, but minute in ours; be strict:
    # only the lowercase "m" and "min" forms mean minutes.
    if unit_text == "M":
        raise InvalidTimeframeError(
            "ambiguous unit 'M'; write 'm' for minutes or 'mo' for months", value=text
        )
    return Timeframe(int(multiple), _ALIASES[unit_key.removesuffix("s") or "s"])
