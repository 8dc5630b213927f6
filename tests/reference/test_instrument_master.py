"""The instrument master: identifiers, point-in-time ticker lookups, CSV/JSON/simulator loads."""

from __future__ import annotations

import contextlib
import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista import Platform
from quantivista.actions.lean import map_file_history, read_map_file
from quantivista.errors import InvalidIdentifierError
from quantivista.providers.simulator.market import SimulatedMarket
from quantivista.reference.identifiers import validate_identifier
from quantivista.reference.instruments import InstrumentMaster

LEAN = Path(__file__).resolve().parents[1] / "fixtures" / "corporate_actions" / "lean"

INSTRUMENTS = """\
instrument_id,name,asset_class,currency,exchange,isin,cusip,figi,sector,listed,delisted
META,Meta Platforms,equity,USD,XNAS,US30303M1027,30303M102,BBG000MM2P62,Communication Services,2012-05-18,
WAMU,Washington Mutual,equity,USD,XNYS,,,,Financials,1990-01-02,2008-09-26
WMGT,Waste Management,equity,USD,XNYS,US94106L1098,94106L109,,Industrials,1998-01-02,
AAPL,Apple,equity,USD,XNAS,US0378331005,037833100,BBG000B9XRY4,Technology,1980-12-12,
"""  # noqa: E501 (CSV rows)
HISTORY = """instrument_id,symbol,valid_from,valid_to
META,FB,2012-05-18,2022-06-08
META,META,2022-06-09,
WAMU,WM,1990-01-02,2008-09-26
WMGT,UW,1998-01-02,1998-07-16
WMGT,WMI,1998-07-17,2009-08-04
WMGT,WM,2009-08-05,
AAPL,AAPL,1980-12-12,
"""


@pytest.fixture
def master(tmp_path: Path) -> InstrumentMaster:
    (tmp_path / "i.csv").write_text(INSTRUMENTS)
    (tmp_path / "h.csv").write_text(HISTORY)
    p = Platform.open(tmp_path / "qv")
    report = p.instruments.load_csv(tmp_path / "i.csv", history=tmp_path / "h.csv")
    assert report.instruments == 4
    assert report.rejected.is_empty()
    return p.instruments


def test_fb_and_meta_are_one_instrument(master: InstrumentMaster) -> None:
    fb = master.lookup("FB", on="2020-01-02")
    meta = master.lookup("META", on="2023-01-03")
    assert fb is not None and meta is not None
    assert fb.instrument_id == meta.instrument_id == "META"
    assert fb.symbol == "FB" and fb.isin == "US30303M1027"
    assert master.lookup("META", on="2020-01-02") is None  # META was not a ticker yet
    assert master.history("META")["symbol"].to_list() == ["FB", "META"]


def test_wm_before_and_after_2008_are_two_instruments(master: InstrumentMaster) -> None:
    before = master.lookup("WM", on="2005-06-01")
    after = master.lookup("WM", on="2010-06-01")
    assert before is not None and after is not None
    assert (before.instrument_id, after.instrument_id) == ("WAMU", "WMGT")
    assert master.lookup("WM", on="2009-01-15") is None  # nobody used WM then
    latest = master.lookup("WM")
    assert latest is not None and latest.instrument_id == "WMGT"


def test_resolve_is_point_in_time_for_many_rows(master: InstrumentMaster) -> None:
    requests = pl.DataFrame(
        {
            "symbol": ["WM", "WM", "FB", "WMI", "AAPL", "ZZZZ"],
            "date": [date(2001, 1, 2), date(2015, 1, 2), date(2013, 1, 2),
                     date(2003, 1, 2), date(2020, 1, 2), date(2020, 1, 2)],
        }
    )  # fmt: skip
    out = master.resolve(requests)
    assert out["instrument_id"].to_list() == ["WAMU", "WMGT", "META", "WMGT", "AAPL", None]
    assert out["symbol"].to_list() == requests["symbol"].to_list()


def test_bad_check_digits_are_rejected_with_reasons(tmp_path: Path) -> None:
    master = InstrumentMaster(tmp_path)
    frame = pl.DataFrame(
        {
            "instrument_id": ["OK", "BADISIN", "BADCUR"],
            "symbol": ["OK", "BI", "BC"],
            "isin": ["US0378331005", "US0378331006", None],
            "currency": ["USD", "USD", "XYZ"],
        }
    )
    report = master.upsert(frame)
    assert report.instruments == 1
    reasons = dict(zip(report.rejected["instrument_id"], report.rejected["reason"], strict=True))
    assert "ISIN" in reasons["BADISIN"]
    assert "currency" in reasons["BADCUR"]
    assert master.instruments()["instrument_id"].to_list() == ["OK"]
    assert master.symbol_history()["symbol"].to_list() == ["OK"]


def test_identifier_validation_of_each_kind() -> None:
    assert validate_identifier("isin", "US0378331005") == "US0378331005"
    assert validate_identifier("cusip", "037833100") == "037833100"
    assert validate_identifier("sedol", "2046251") == "2046251"
    assert validate_identifier("figi", "BBG000B9XRY4") == "BBG000B9XRY4"
    for kind, bad in [("isin", "US0378331004"), ("cusip", "037833101"), ("sedol", "2046252"),
                      ("figi", "BBG000B9XRY5"), ("lei", "x")]:  # fmt: skip
        with pytest.raises(InvalidIdentifierError):
            validate_identifier(kind, bad)


@given(st.text(max_size=14))
def test_identifier_validation_only_raises_its_own_error(text: str) -> None:
    for kind in ("isin", "cusip", "sedol", "figi"):
        with contextlib.suppress(InvalidIdentifierError):
            validate_identifier(kind, text)


def test_json_load_with_nested_history_and_map_file(tmp_path: Path) -> None:
    path = tmp_path / "i.json"
    path.write_text(
        json.dumps(
            [
                {
                    "instrument_id": "SPX",
                    "name": "S&P 500",
                    "asset_class": "index",
                    "exchange": "XNYS",
                    "history": [{"symbol": "^GSPC", "valid_from": "1957-03-04"}],
                },
                {"instrument_id": "EURUSD", "asset_class": "fx", "exchange": "XOFF"},
            ]
        )
    )
    master = InstrumentMaster(tmp_path)
    assert master.load_json(path).instruments == 2
    spx = master.lookup("^GSPC", on="2020-01-02")
    assert spx is not None and spx.asset_class == "index"
    master.load_ticker_history(
        "GOOGL", map_file_history(read_map_file(LEAN / "map_files" / "googl.csv"))
    )
    assert master.history("GOOGL")["symbol"].to_list() == ["GOOG", "GOOGL"]
    googl = master.lookup("GOOG", on="2010-01-04")
    assert googl is not None and googl.instrument_id == "GOOGL"


def test_simulator_universe_loads_with_its_rename(tmp_path: Path) -> None:
    market = SimulatedMarket(seed=5, universe_size=6, as_of="2025-06-01")
    master = InstrumentMaster(tmp_path)
    report = master.load_simulator(market)
    assert report.instruments == 6
    renamed = market.instruments[1]
    assert renamed.former_symbol is not None and renamed.renamed_on is not None
    old = master.lookup(renamed.former_symbol, on=date(2019, 1, 2))
    new = master.lookup(renamed.symbol, on=market.sessions[-1])
    assert old is not None and new is not None
    assert old.instrument_id == new.instrument_id == renamed.instrument_id
