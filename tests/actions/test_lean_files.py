"""Lean factor, map and daily files: parsing, events, and rename-stitched reads."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista import Platform
from quantivista.actions.lean import (
    factor_file_actions,
    map_file_actions,
    map_file_history,
    read_factor_file,
    read_lean_daily,
    read_map_file,
)
from quantivista.errors import SchemaError

from .conftest import LEAN


def test_factor_file_events_of_aapl_are_the_real_ones() -> None:
    events = factor_file_actions(read_factor_file(LEAN / "factor_files" / "aapl.csv"), "aapl")
    splits = events.filter(pl.col("action_type") == "split")
    assert splits["ex_date"].to_list() == [
        date(2000, 6, 21),
        date(2005, 2, 28),
        date(2014, 6, 9),
        date(2020, 8, 31),
    ]
    assert splits["ratio"].to_list() == pytest.approx([2.0, 2.0, 7.0, 4.0], rel=1e-5)
    divs = events.filter(pl.col("action_type") == "dividend")
    first = divs.row(0, named=True)
    # 2012-08-09 ex-date, $2.65 a share before the 7:1 split
    assert first["ex_date"] == date(2012, 8, 9)
    assert first["amount"] == pytest.approx(2.65, abs=1e-3)
    assert set(events["symbol"]) == {"AAPL"}


def test_map_file_history_and_events_of_meta() -> None:
    rows = read_map_file(LEAN / "map_files" / "meta.csv")
    hist = map_file_history(rows)
    assert hist.select("ticker", "valid_from", "valid_to").rows() == [
        ("FB", date(2012, 5, 18), date(2022, 6, 8)),
        ("META", date(2022, 6, 9), None),
    ]
    events = map_file_actions(rows)
    assert events.select("symbol", "action_type", "ex_date", "new_symbol").rows() == [
        ("FB", "symbol_change", date(2022, 6, 9), "META")
    ]


def test_map_file_of_a_delisted_company_ends_with_a_delisting() -> None:
    events = map_file_actions(read_map_file(LEAN / "map_files" / "twx.csv"))
    assert events.select("symbol", "action_type", "new_symbol").rows() == [
        ("AOL", "symbol_change", "TWX"),
        ("TWX", "delisting", None),
    ]
    assert events["ex_date"].to_list() == [date(2003, 10, 16), date(2018, 6, 18)]


def test_meta_from_2012_reads_fb_history_as_one_series(
    platform: Platform,
    make_bars,  # type: ignore[no-untyped-def]
) -> None:
    fb = make_bars(["FB"], 2530, start="2012-05-18")
    fb = fb.filter(pl.col("ts") < pl.datetime(2022, 6, 9, time_zone="UTC"))
    meta = make_bars(["META"], 60, start="2022-06-09", seed=3)
    platform.write_bars(pl.concat([fb, meta]), source="test")
    platform.write_actions(map_file_actions(read_map_file(LEAN / "map_files" / "meta.csv")))
    got = platform.bars("META", start="2012-01-01")
    assert got.height == fb.height + meta.height
    assert set(got["symbol"]) == {"META"}
    assert got["ts"].is_sorted()
    assert got["close"].to_list() == [*fb["close"], *meta["close"]]
    assert got["ts"][0].date() == date(2012, 5, 18)
    # the old ticker alone, and the new one without following renames
    assert platform.bars("FB").height == fb.height
    assert platform.bars("META", follow_renames=False).height == meta.height


def test_waste_management_stitches_uw_wmi_wm_and_matches_lean_factors(
    platform: Platform,
) -> None:
    """WM until 2008 was Washington Mutual: only the Waste Management segment is read."""
    for ticker in ("uw", "wmi", "wm"):
        platform.write_bars(read_lean_daily(LEAN / "daily" / f"{ticker}.zip", ticker), "lean")
    rows = read_map_file(LEAN / "map_files" / "wm.csv")
    factors = read_factor_file(LEAN / "factor_files" / "wm.csv")
    platform.write_actions(map_file_actions(rows))
    platform.write_actions(factor_file_actions(factors, "wm", history=map_file_history(rows)))
    got = platform.bars("WM", adjust="all", dividend_convention="crsp")
    raw = platform.bars("WM")
    assert got.height == raw.height
    washington_mutual = platform.bars("WM", follow_renames=False, end="2008-12-31")
    assert washington_mutual.height > 2000  # stored under WM, yet not in the stitched series
    assert raw.filter(pl.col("ts").dt.year() == 2005)["close"].to_list() != (
        washington_mutual.filter(pl.col("ts").dt.year() == 2005)["close"].to_list()
    )
    want = (
        raw.with_columns(day=pl.col("ts").dt.date())
        .join_asof(factors, left_on="day", right_on="date", strategy="forward")
        .sort("ts")
    )
    expected = want["close"] * want["price_factor"] * want["split_factor"]
    rel = ((got["close"] / expected) - 1.0).abs().max()
    assert isinstance(rel, float)
    assert rel < 1e-6


def test_bad_factor_file_raises_schema_error() -> None:
    with pytest.raises(SchemaError):
        read_factor_file("20200101,0,1,10\n20501231,1,1,0\n")
    with pytest.raises(SchemaError):
        read_factor_file("2020-01-01,1,1,10\n")


@given(
    st.lists(
        st.tuples(st.floats(0.5, 1.0), st.sampled_from([1.0, 0.5, 0.25, 2.0])),
        min_size=1,
        max_size=6,
    )
)
def test_factor_file_round_trip_rebuilds_the_factors(steps: list[tuple[float, float]]) -> None:
    """Events derived from any factor file rebuild its factors through the crsp formula."""
    days = [date(2001 + i, 3, 1) for i in range(len(steps))]
    pf, sf = 1.0, 1.0
    lines = ["20501231,1,1,0"]
    for day, (r, s) in zip(reversed(days), reversed(steps), strict=True):
        pf, sf = pf * r, sf * s
        lines.append(f"{day:%Y%m%d},{pf!r},{sf!r},{50.0}")
    factors = read_factor_file("\n".join(reversed(lines)) + "\n")
    events = factor_file_actions(factors, "x")
    divs = events.filter(pl.col("action_type") == "dividend")
    assert divs.height == sum(1 for r, _ in steps if abs(r - 1.0) > 1e-12)
    assert (divs["amount"] >= 0).all()


def test_as_of_resolves_a_recycled_ticker_to_its_user_then(platform: Platform) -> None:
    for ticker in ("wmi", "wm"):
        platform.write_bars(read_lean_daily(LEAN / "daily" / f"{ticker}.zip", ticker), "lean")
    platform.write_actions(map_file_actions(read_map_file(LEAN / "map_files" / "wm.csv")))
    waste = platform.bars("WM", start="2005-01-01", end="2005-12-31")
    mutual = platform.bars("WM", start="2005-01-01", end="2005-12-31", published="2005-12-31")
    wmi = platform.bars("WMI", start="2005-01-01", end="2005-12-31", follow_renames=False)
    assert waste["close"].to_list() == wmi["close"].to_list()  # Waste Management, as WMI
    assert mutual.height == waste.height
    assert mutual["close"].to_list() != waste["close"].to_list()  # Washington Mutual


def test_import_lean_equity_loads_bars_actions_and_history(platform: Platform) -> None:
    done = platform.runtime.reference.import_lean_equity(LEAN, "wm")
    assert done.tickers == ["UW", "WMI", "WM"]
    assert done.bars > 5000 and done.actions > 70
    found = platform.instruments.lookup("WMI", on="2005-01-03")
    assert found is not None and found.instrument_id == "WM"
    series = platform.bars("WM", end="1998-12-31")
    assert series["ts"][0].date() == date(1998, 1, 2)  # UW's first bar
