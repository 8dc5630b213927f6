"""Date and time coercion shared by the public API (str, date, datetime in; UTC out)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

__all__ = ["DateLike", "day_start_utc", "to_date", "to_utc"]

DateLike = str | date | datetime


def to_date(value: DateLike) -> date:
    """Return the calendar date of `value` ("2024-01-31", a date, or a datetime)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError as exc:
            from quantivista.errors import InvalidInputError

            raise InvalidInputError("not an ISO date (YYYY-MM-DD)", value=value) from exc
    from quantivista.errors import InvalidInputError

    raise InvalidInputError("expected a date, datetime or ISO string", got=type(value).__name__)


def to_utc(value: DateLike) -> datetime:
    """Return `value` as an aware UTC datetime; dates and date strings mean 00:00 UTC.

    Naive datetimes are taken to be UTC (they come from callers typing literals; stored
    timestamps are always aware).
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and len(value.strip()) > 10:
        from quantivista.errors import InvalidInputError

        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInputError("not an ISO datetime", value=value) from exc
        return to_utc(parsed)
    return day_start_utc(to_date(value))


def day_start_utc(day: date) -> datetime:
    """Return 00:00 UTC of `day`: the timestamp of a daily bar for that session."""
    return datetime.combine(day, time(0), tzinfo=UTC)
