"""Normalizers: symbols, time, numbers, units, grid alignment (the basis: test_raw_basis)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.errors import InvalidInputError, SchemaError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import coerce_bars
from quantivista.processing.normalize import (
    SHARE_CLASS_SEPARATORS,
    align_to_grid,
    from_canonical_symbols,
    harmonize,
    localize_ts,
    normalize_units,
    parse_numbers,
    to_canonical_symbols,
)
from quantivista.reference.calendars import get_calendar

PROVIDERS = sorted(SHARE_CLASS_SEPARATORS)


def _canon(values: list[str], provider: str) -> list[str]:
    df = pl.DataFrame({"s": values}, schema={"s": pl.String})
    return df.select(to_canonical_symbols(pl.col("s"), provider))["s"].to_list()


def test_share_class_spellings_meet_in_one_canonical_symbol() -> None:
    assert _canon(["BRK-B", "brk-b", "VOD.L"], "yahoo") == ["BRK.B", "BRK.B", "VOD.L"]
    assert _canon(["BRK/B"], "nasdaq") == ["BRK.B"]
    assert _canon(["BRK B"], "bloomberg") == ["BRK.B"]
    assert _canon(["BRK.B"], "polygon") == ["BRK.B"]
    with pytest.raises(InvalidInputError):
        _canon(["X"], "nobody")


@settings(max_examples=80, deadline=None)
@given(
    base=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=5),
    cls=st.one_of(st.none(), st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=2)),
    provider=st.sampled_from(PROVIDERS),
)
def test_symbol_round_trip(base: str, cls: str | None, provider: str) -> None:
    canonical = base if cls is None else f"{base}.{cls}"
    df = pl.DataFrame({"s": [canonical]})
    theirs = df.select(from_canonical_symbols(pl.col("s"), provider))
    sep = SHARE_CLASS_SEPARATORS[provider]
    assert theirs["s"][0] == (canonical if cls is None else f"{base}{sep}{cls}")
    back = theirs.select(to_canonical_symbols(pl.col("s"), provider))
    assert back["s"][0] == canonical


def test_local_times_become_utc_and_daily_bars_the_session_date() -> None:
    df = pl.DataFrame(
        {"ts": [datetime(2024, 3, 8, 9, 30), datetime(2024, 3, 11, 9, 30)]}  # DST starts 03-10
    )
    out = localize_ts(df, "America/New_York", "1m")
    assert out["ts"].to_list() == [
        datetime(2024, 3, 8, 14, 30, tzinfo=UTC),
        datetime(2024, 3, 11, 13, 30, tzinfo=UTC),
    ]
    daily = localize_ts(
        pl.DataFrame({"ts": [datetime(2024, 3, 8, 16, 0)]}), "America/New_York", "1d"
    )
    assert daily["ts"][0] == datetime(2024, 3, 8, tzinfo=UTC)
    # an aware late-evening UTC stamp is still the New York session date
    aware = pl.DataFrame({"ts": [datetime(2024, 3, 9, 1, 0, tzinfo=UTC)]})
    assert localize_ts(aware, "America/New_York", "1d")["ts"][0] == datetime(2024, 3, 8, tzinfo=UTC)
    with pytest.raises(SchemaError):  # 02:30 does not exist on 2024-03-10 in New York
        localize_ts(pl.DataFrame({"ts": [datetime(2024, 3, 10, 2, 30)]}), "America/New_York", "1m")


@settings(max_examples=80, deadline=None)
@given(
    value=st.floats(-1e9, 1e9, allow_nan=False).map(lambda v: round(v, 2)),
    style=st.sampled_from(["plain", "commas", "dollar", "parens", "suffix"]),
)
def test_parse_numbers_reads_vendor_formats(value: float, style: str) -> None:
    if style == "plain":
        text, want = f"{value}", value
    elif style == "commas":
        text, want = f"{value:,.2f}", value
    elif style == "dollar":
        text, want = f"${abs(value):.2f}", abs(value)
    elif style == "parens":
        text, want = f"({abs(value):.2f})", -abs(value)
    else:
        text, want = f"{abs(value) / 1e6:.4f}M", round(abs(value) / 1e6, 4) * 1e6
    out = parse_numbers(pl.DataFrame({"close": [text, "N/A"]}), ["close"])
    assert out["close"][0] == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert out["close"][1] is None


def test_parse_numbers_refuses_garbage() -> None:
    with pytest.raises(SchemaError):
        parse_numbers(pl.DataFrame({"volume": ["12", "twelve"]}), ["volume"])


def test_pence_become_pounds_and_volume_scales() -> None:
    df = pl.DataFrame(
        {
            "open": [250.0, 10.0],
            "close": [260.0, 11.0],
            "volume": [3.0, 4.0],
            "currency": ["GBp", "USD"],
        }
    )
    out = normalize_units(df, volume_scale=1000)
    assert out["close"].to_list() == [2.6, 11.0]
    assert out["currency"].to_list() == ["GBP", "USD"]
    assert out["volume"].to_list() == [3000.0, 4000.0]
    lit = normalize_units(df.drop("currency"), currency="GBX")
    assert lit["open"].to_list() == [2.5, 0.1]


def test_harmonize_a_vendor_csv() -> None:
    df = pl.DataFrame(
        {
            "Date": ["2024-01-02", "2024-01-03"],
            "Open": ["1,000.5", "1,001"],
            "High": ["1,010", "1,011"],
            "Low": ["990", "991"],
            "Close": ["1,005", "1,006"],
            "Volume": ["1.5M", "2M"],
            "Ticker": ["BRK-B", "BRK-B"],
        }
    )
    cols = {"Date": "ts", "Open": "open", "High": "high", "Low": "low", "Close": "close",
            "Volume": "volume", "Ticker": "symbol"}  # fmt: skip
    out = harmonize(df, columns=cols, provider="yahoo", timeframe="1d", tz="America/New_York")
    assert out["symbol"].to_list() == ["BRK.B", "BRK.B"]
    assert out["ts"][0] == datetime(2024, 1, 2, tzinfo=UTC)
    assert out["open"][0] == 1000.5
    assert out["volume"].to_list() == [1.5e6, 2e6]
    assert out["provider"][0] == "yahoo"


def test_align_to_grid_flags_or_snaps_explicitly() -> None:
    cal = get_calendar("XNYS")
    ts = [datetime(2024, 1, 2, 14, 30, tzinfo=UTC), datetime(2024, 1, 2, 14, 36, 20, tzinfo=UTC)]
    bars = coerce_bars(
        pl.DataFrame({"symbol": "A", "ts": ts, "open": 1.0, "high": 1.0, "low": 1.0,
                      "close": 1.0, "volume": 1.0}),
        timeframe="5m",
    )  # fmt: skip
    flagged = align_to_grid(bars, "5m", cal)
    assert flagged["ts"].to_list() == ts
    assert flagged["quality_flags"].to_list() == [0, int(QualityFlag.MISALIGNED_TS)]
    snapped = align_to_grid(bars, "5m", cal, snap=True)
    assert snapped["ts"][1] == datetime(2024, 1, 2, 14, 35, tzinfo=UTC)
    assert snapped["quality_flags"].to_list() == [0, int(QualityFlag.TS_SNAPPED)]
    assert date(2024, 1, 2) == snapped["ts"][1].date()


@settings(max_examples=80, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31)),
    tz=st.sampled_from(["America/New_York", "Europe/London", "Asia/Tokyo"]),
)
def test_localize_round_trips_wall_time(moment: datetime, tz: str) -> None:
    moment = moment.replace(microsecond=0)
    df = pl.DataFrame({"ts": [moment]}, schema={"ts": pl.Datetime("us")})
    try:
        out = localize_ts(df, tz, "1m")
    except SchemaError:
        return  # a wall time skipped by a DST change: refused, never guessed
    back = out.select(pl.col("ts").dt.convert_time_zone(tz).dt.replace_time_zone(None))
    assert back["ts"][0] == moment
    daily = localize_ts(df, tz, "1d")["ts"][0]
    assert daily == datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
