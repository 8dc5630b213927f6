"""Timeframes: parsing, canonical spelling, lengths and ordering."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista.errors import InvalidInputError, InvalidTimeframeError
from quantivista.model.timeframe import Timeframe

UNITS = ["s", "m", "h", "d", "w", "mo"]
SPELLINGS = {
    "s": ["s", "sec", "secs", "S", "SEC"],
    "m": ["m", "min", "mins", "MIN", "Min"],
    "h": ["h", "hour", "hours", "H", "HOUR"],
    "d": ["d", "day", "days", "D", "Day"],
    "w": ["w", "wk", "week", "weeks", "W", "WK"],
    "mo": ["mo", "mon", "month", "months", "MO", "Month"],
}

timeframes = st.builds(Timeframe, st.integers(1, 10**6), st.sampled_from(UNITS))


@given(timeframes)
def test_parse_of_str_is_identity(tf: Timeframe) -> None:
    assert Timeframe.parse(str(tf)) == tf


@given(
    st.integers(1, 10**5),
    st.sampled_from(UNITS).flatmap(lambda u: st.tuples(st.just(u), st.sampled_from(SPELLINGS[u]))),
    st.sampled_from(["", " ", "  "]),
)
def test_every_spelling_of_a_unit_parses_to_it(
    n: int, unit_and_spelling: tuple[str, str], pad: str
) -> None:
    unit, spelling = unit_and_spelling
    tf = Timeframe.parse(f"{pad}{n}{pad}{spelling}{pad}")
    assert (tf.multiple, tf.unit) == (n, unit)
    assert str(tf) == f"{n}{unit}"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("1m", "1m"), ("5min", "5m"), ("15m", "15m"), ("1hour", "1h"), ("1day", "1d"),
     ("1wk", "1w"), ("1mo", "1mo"), ("3 months", "3mo")],
)  # fmt: skip
def test_parse_canonical_spellings(text: str, canonical: str) -> None:
    assert str(Timeframe.parse(text)) == canonical


def test_parse_passes_timeframes_through() -> None:
    tf = Timeframe(5, "m")
    assert Timeframe.parse(tf) is tf


@pytest.mark.parametrize(
    "text",
    ["", "m", "1", "0m", "00d", "-1d", "1.5h", "1y", "1 fortnight", "1M", "1Ms", "d1",
     "1 m m", "1dd", "five minutes"],
)  # fmt: skip
def test_invalid_strings_raise(text: str) -> None:
    with pytest.raises(InvalidTimeframeError) as info:
        Timeframe.parse(text)
    assert isinstance(info.value, InvalidInputError)
    assert "value" in info.value.context


def test_capital_m_alone_is_refused_as_ambiguous() -> None:
    with pytest.raises(InvalidTimeframeError, match="ambiguous"):
        Timeframe.parse("1M")


@given(st.text(alphabet="0123456789 smhdwkoMSHDWKnaxy.-", max_size=10))
def test_parse_either_succeeds_canonically_or_raises_the_domain_error(text: str) -> None:
    try:
        tf = Timeframe.parse(text)
    except InvalidTimeframeError:
        return
    assert tf.multiple > 0
    assert Timeframe.parse(str(tf)) == tf


def test_constructor_validates() -> None:
    with pytest.raises(InvalidTimeframeError, match="positive"):
        Timeframe(0, "m")
    with pytest.raises(InvalidTimeframeError, match="unit"):
        Timeframe(1, "y")  # type: ignore[arg-type]


def test_timeframes_are_frozen_and_hashable() -> None:
    tf = Timeframe(1, "d")
    with pytest.raises(AttributeError):
        tf.multiple = 2  # type: ignore[misc]
    assert {Timeframe.parse("1d"), Timeframe.parse("1day"), tf} == {tf}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("4h", 14400),
     ("1d", 86400), ("1w", 604800), ("2w", 1209600), ("1mo", None), ("3mo", None)],
)  # fmt: skip
def test_seconds_and_duration(text: str, seconds: int | None) -> None:
    tf = Timeframe.parse(text)
    assert tf.seconds == seconds
    assert tf.duration == (None if seconds is None else timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("text", "intraday", "period"),
    [("30s", True, "month"), ("1m", True, "month"), ("1h", True, "month"),
     ("1d", False, "all"), ("1w", False, "all"), ("1mo", False, "all")],
)  # fmt: skip
def test_is_intraday_and_partition_period(text: str, intraday: bool, period: str) -> None:
    tf = Timeframe.parse(text)
    assert tf.is_intraday is intraday
    assert tf.partition_period == period


@pytest.mark.parametrize(
    ("text", "every", "truncated"),
    [
        ("15m", "15m", "2024-01-31 10:30:00"),
        ("1h", "1h", "2024-01-31 10:00:00"),
        ("1d", "1d", "2024-01-31 00:00:00"),
        ("1mo", "1mo", "2024-01-01 00:00:00"),
    ],
)
def test_polars_every_is_understood_by_polars(text: str, every: str, truncated: str) -> None:
    tf = Timeframe.parse(text)
    assert tf.polars_every == every
    s = pl.Series(["2024-01-31 10:44:59"]).str.to_datetime().dt.truncate(tf.polars_every)
    assert str(s[0]) == truncated


def test_sort_key_orders_common_timeframes_from_finest_to_coarsest() -> None:
    texts = ["1mo", "1d", "1m", "1w", "1h", "15m", "5m", "30s"]
    ordered = sorted((Timeframe.parse(t) for t in texts), key=Timeframe.sort_key)
    assert [str(t) for t in ordered] == ["30s", "1m", "5m", "15m", "1h", "1d", "1w", "1mo"]


def test_sort_key_orders_by_length_across_units() -> None:
    # 90 minutes is coarser than an hour, 48 hours coarser than a day, 2 months than 5 weeks
    texts = ["1h", "90m", "1d", "48h", "5w", "2mo"]
    ordered = sorted((Timeframe.parse(t) for t in texts), key=Timeframe.sort_key)
    assert [str(t) for t in ordered] == ["1h", "90m", "1d", "48h", "5w", "2mo"]


@pytest.mark.parametrize("text", ["1ms", "5mss", "1hs2"])
def test_unit_typos_are_not_read_as_another_unit(text: str) -> None:
    with pytest.raises(InvalidTimeframeError):
        Timeframe.parse(text)


@pytest.mark.parametrize(("text", "canonical"), [("2mins", "2m"), ("3hours", "3h"), ("1s", "1s")])
def test_plural_unit_names_parse(text: str, canonical: str) -> None:
    assert str(Timeframe.parse(text)) == canonical
