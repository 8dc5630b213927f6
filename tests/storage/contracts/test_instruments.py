"""The instrument store contract on every backend, directly and through the instrument master."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantivista.actions.lean import map_file_history, read_map_file
from quantivista.model.instruments import HISTORY_SCHEMA, INSTRUMENT_SCHEMA
from quantivista.providers.simulator.market import SimulatedMarket
from quantivista.reference.instruments import InstrumentMaster
from quantivista.storage.contracts import Backend
from samples import HISTORY, INSTRUMENTS

from .conftest import Site, run_together

LEAN = Path(__file__).resolve().parents[2] / "fixtures" / "corporate_actions" / "lean"


def instruments(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        [{c: r.get(c) for c in INSTRUMENT_SCHEMA.names()} for r in rows], schema=INSTRUMENT_SCHEMA
    )


def history(*rows: tuple[str, str, date | None, date | None]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=HISTORY_SCHEMA, orient="row")


@pytest.fixture
def master(backend: Backend, tmp_path: Path) -> InstrumentMaster:
    (tmp_path / "i.csv").write_text(INSTRUMENTS)
    (tmp_path / "h.csv").write_text(HISTORY)
    master = InstrumentMaster(backend.instruments)
    report = master.load_csv(tmp_path / "i.csv", history=tmp_path / "h.csv")
    assert report.instruments == 4
    assert report.rejected.is_empty()
    return master


# -- the store -------------------------------------------------------------------------------
def test_empty_store(backend: Backend) -> None:
    assert backend.instruments.instruments().schema == INSTRUMENT_SCHEMA
    assert backend.instruments.instruments().is_empty()
    assert backend.instruments.symbol_history().schema == HISTORY_SCHEMA
    assert backend.instruments.symbol_history().is_empty()


def test_merge_replaces_instruments_by_id_and_history_of_the_ids_given(backend: Backend) -> None:
    store = backend.instruments
    store.merge(
        instruments({"instrument_id": "B", "name": "b"}, {"instrument_id": "A", "name": "a"}),
        history(("A", "AA", date(2000, 1, 1), None), ("B", "BB", None, None)),
    )
    assert store.instruments()["instrument_id"].to_list() == ["A", "B"]  # by id
    assert store.symbol_history()["symbol"].to_list() == ["AA", "BB"]
    # A renamed: its history is replaced; B untouched; C new without history
    store.merge(
        instruments({"instrument_id": "A", "name": "a2", "listed": date(2000, 1, 1)},
                    {"instrument_id": "C", "name": "c"}),
        history(("A", "AA", date(2000, 1, 1), date(2010, 1, 1)),
                ("A", "AAX", date(2010, 1, 2), None)),
    )  # fmt: skip
    got = store.instruments()
    assert got.select("instrument_id", "name").rows() == [("A", "a2"), ("B", "b"), ("C", "c")]
    assert got["listed"].to_list() == [date(2000, 1, 1), None, None]
    assert store.symbol_history().rows() == [
        ("A", "AA", date(2000, 1, 1), date(2010, 1, 1)),
        ("A", "AAX", date(2010, 1, 2), None),
        ("B", "BB", None, None),
    ]
    # a merge without history keeps every ticker
    store.merge(instruments({"instrument_id": "B", "name": "b2"}), history())
    assert store.symbol_history().height == 3


def test_history_is_sorted_by_symbol_then_start_open_start_first(backend: Backend) -> None:
    backend.instruments.merge(
        instruments({"instrument_id": "X"}, {"instrument_id": "Y"}),
        history(("X", "S", date(2005, 1, 1), None), ("Y", "S", None, date(2004, 12, 31)),
                ("X", "R", date(2001, 1, 1), None)),
    )  # fmt: skip
    assert backend.instruments.symbol_history().select("instrument_id", "symbol").rows() == [
        ("X", "R"), ("Y", "S"), ("X", "S"),
    ]  # fmt: skip


def test_an_id_given_twice_in_one_merge_is_stored_once_the_last_winning(backend: Backend) -> None:
    backend.instruments.merge(
        instruments(
            {"instrument_id": "A", "name": "first"}, {"instrument_id": "A", "name": "last"}
        ),
        history(),
    )
    assert backend.instruments.instruments().select("instrument_id", "name").rows() == [
        ("A", "last")
    ]


def test_version_changes_after_a_merge_through_another_instance(site: Site) -> None:
    reader, writer = site.open(), site.open()
    first = reader.instruments.version()
    writer.instruments.merge(instruments({"instrument_id": "A"}), history(("A", "A", None, None)))
    second = reader.instruments.version()
    assert second != first
    assert reader.instruments.instruments().height == 1
    writer.instruments.merge(instruments({"instrument_id": "B"}), history())
    assert reader.instruments.version() not in (first, second)


def test_concurrent_merges_in_threads_lose_nothing(backend: Backend) -> None:
    def merge(i: int) -> None:
        ident = f"I{i:02d}"
        backend.instruments.merge(
            instruments({"instrument_id": ident}), history((ident, ident, None, None))
        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(merge, range(24)))
    assert backend.instruments.instruments().height == 24
    assert backend.instruments.symbol_history().height == 24


def test_concurrent_merges_in_two_processes_lose_nothing(site: Site) -> None:
    done = run_together(
        site.worker("merge_instruments", tag="P", count=20),
        site.worker("merge_instruments", tag="Q", count=20),
    )
    assert done == [20, 20]
    store = site.open().instruments
    assert store.instruments().height == 40
    assert store.symbol_history().height == 40


def test_lake_and_postgres_return_the_same_frames(
    twins: tuple[Backend, Backend], tmp_path: Path
) -> None:
    (tmp_path / "i.csv").write_text(INSTRUMENTS)
    (tmp_path / "h.csv").write_text(HISTORY)
    for b in twins:
        master = InstrumentMaster(b.instruments)
        master.load_csv(tmp_path / "i.csv", history=tmp_path / "h.csv")
        master.load_simulator(SimulatedMarket(seed=5, universe_size=6, as_of="2025-06-01"))
    lake, pg = (b.instruments for b in twins)
    assert_frame_equal(pg.instruments(), lake.instruments())
    assert_frame_equal(pg.symbol_history(), lake.symbol_history())


# -- through the instrument master -----------------------------------------------------------
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


def test_bad_check_digits_are_rejected_with_reasons(backend: Backend) -> None:
    master = InstrumentMaster(backend.instruments)
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


def test_json_load_with_nested_history_and_map_file(backend: Backend, tmp_path: Path) -> None:
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
    master = InstrumentMaster(backend.instruments)
    assert master.load_json(path).instruments == 2
    spx = master.lookup("^GSPC", on="2020-01-02")
    assert spx is not None and spx.asset_class == "index"
    master.load_ticker_history(
        "GOOGL", map_file_history(read_map_file(LEAN / "map_files" / "googl.csv"))
    )
    assert master.history("GOOGL")["symbol"].to_list() == ["GOOG", "GOOGL"]
    googl = master.lookup("GOOG", on="2010-01-04")
    assert googl is not None and googl.instrument_id == "GOOGL"


def test_simulator_universe_loads_with_its_rename(backend: Backend) -> None:
    market = SimulatedMarket(seed=5, universe_size=6, as_of="2025-06-01")
    master = InstrumentMaster(backend.instruments)
    report = master.load_simulator(market)
    assert report.instruments == 6
    renamed = market.instruments[1]
    assert renamed.former_symbol is not None and renamed.renamed_on is not None
    old = master.lookup(renamed.former_symbol, on=date(2019, 1, 2))
    new = master.lookup(renamed.symbol, on=market.sessions[-1])
    assert old is not None and new is not None
    assert old.instrument_id == new.instrument_id == renamed.instrument_id
