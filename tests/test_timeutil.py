"""Date coercion of user input: str, date and datetime in; dates and aware UTC out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from quantivista.errors import InvalidInputError
from quantivista.timeutil import day_start_utc, to_date, to_utc

NEW_YORK_WINTER = timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-31", date(2024, 1, 31)),
        ("  2024-01-31  ", date(2024, 1, 31)),
        ("2024-01-31T23:59:59", date(2024, 1, 31)),
        (date(2024, 2, 29), date(2024, 2, 29)),
        (datetime(2024, 2, 29, 23, 0), date(2024, 2, 29)),  # naive: its own date
        (datetime(2024, 2, 29, 23, 0, tzinfo=UTC), date(2024, 2, 29)),
        # aware datetimes are read in UTC: 20:00 in New York is already tomorrow in UTC
        (datetime(2024, 2, 28, 20, 0, tzinfo=NEW_YORK_WINTER), date(2024, 2, 29)),
    ],
)
def test_to_date(value: str | date | datetime, expected: date) -> None:
    result = to_date(value)
    assert result == expected
    assert type(result) is date


@pytest.mark.parametrize("value", ["", "2024-13-01", "2024-02-30", "yesterday", "31/01/2024"])
def test_to_date_rejects_non_iso_strings(value: str) -> None:
    with pytest.raises(InvalidInputError, match="ISO date") as info:
        to_date(value)
    assert info.value.context["value"] == value


@pytest.mark.parametrize("value", [20240131, 1.5, None, ["2024-01-31"]])
def test_to_date_rejects_other_types(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        to_date(value)  # type: ignore[arg-type]
    assert info.value.context["got"] == type(value).__name__


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-31", datetime(2024, 1, 31, tzinfo=UTC)),
        (date(2024, 1, 31), datetime(2024, 1, 31, tzinfo=UTC)),
        ("2024-01-31T14:30:00Z", datetime(2024, 1, 31, 14, 30, tzinfo=UTC)),
        ("2024-01-31T14:30:00+02:00", datetime(2024, 1, 31, 12, 30, tzinfo=UTC)),
        ("2024-01-31 14:30", datetime(2024, 1, 31, 14, 30, tzinfo=UTC)),  # naive means UTC
        (datetime(2024, 1, 31, 14, 30), datetime(2024, 1, 31, 14, 30, tzinfo=UTC)),
        (
            datetime(2024, 1, 31, 9, 30, tzinfo=NEW_YORK_WINTER),
            datetime(2024, 1, 31, 14, 30, tzinfo=UTC),
        ),
    ],
)
def test_to_utc(value: str | date | datetime, expected: datetime) -> None:
    result = to_utc(value)
    assert result == expected
    assert result.utcoffset() == timedelta(0)
    assert result.tzinfo is UTC


def test_to_utc_rejects_bad_datetime_strings() -> None:
    with pytest.raises(InvalidInputError, match="ISO datetime"):
        to_utc("2024-01-31T25:00:00")
    with pytest.raises(InvalidInputError, match="ISO date"):
        to_utc("2024-1-1")


def test_day_start_utc() -> None:
    assert day_start_utc(date(2024, 7, 3)) == datetime(2024, 7, 3, 0, 0, tzinfo=UTC)
