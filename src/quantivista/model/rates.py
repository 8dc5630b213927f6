"""Rate-limit windows ("5/minute", "25/day"): the grammar settings and limiters share."""

from __future__ import annotations

import re
from dataclasses import dataclass

from quantivista.errors import ConfigurationError

__all__ = ["Rate"]

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` calls in any window of `period_s` seconds."""

    limit: int
    period_s: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_s <= 0:
            raise ConfigurationError(
                "a rate needs limit >= 1 and a positive period", rate=str(self)
            )

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse "N/period": "5/minute", "25/day", "1/second", "50/hour", "100/10s"."""
        match = _RATE_RE.match(text.lower())
        unit = _UNITS.get(match.group(3)) if match else None
        if match is None or unit is None:
            raise ConfigurationError(
                'cannot parse rate limit, expected "N/period" like "5/minute"', rate=text
            )
        multiple = float(match.group(2)) if match.group(2) else 1.0
        return cls(int(match.group(1)), multiple * unit)

    def __str__(self) -> str:
        for name in ("week", "day", "hour", "minute", "second"):
            if self.period_s == _UNITS[name]:
                return f"{self.limit}/{name}"
        return f"{self.limit}/{self.period_s:g}s"
