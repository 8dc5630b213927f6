"""The instrument master: identifiers, and a platform's master over its backend's store.

Lookups, loads and the store behind them are held to the contract on every backend in
`tests/storage/contracts/test_instruments.py`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista import Platform
from quantivista.errors import InvalidIdentifierError
from quantivista.reference.identifiers import validate_identifier
from quantivista.reference.instruments import InstrumentMaster
from samples import HISTORY, INSTRUMENTS


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
