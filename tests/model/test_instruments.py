"""Instrument and corporate-action records: validation of identifiers, dates and payloads."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from quantivista.model.instruments import AssetClass, CorporateAction, Instrument
from quantivista.model.schema import ACTION_TYPES


def test_instrument_defaults() -> None:
    inst = Instrument(symbol="AAPL")
    assert inst.asset_class is AssetClass.EQUITY
    assert inst.currency == "USD"
    assert inst.exchange == "XNYS"
    assert inst.listed is None and inst.delisted is None


def test_instrument_accepts_full_reference_data() -> None:
    inst = Instrument(
        symbol="VOD",
        name="Vodafone",
        asset_class="equity",  # type: ignore[arg-type]
        currency="GBP",
        exchange="XLON",
        isin="GB00BH4HKS39",
        listed=date(1988, 10, 26),
        delisted=date(2030, 1, 1),
    )
    assert inst.asset_class is AssetClass.EQUITY
    assert inst.exchange == "XLON"


@pytest.mark.parametrize(
    "changes",
    [
        {"symbol": ""},
        {"symbol": "X" * 65},
        {"currency": "usd"},
        {"currency": "US"},
        {"exchange": "NYSE!"},
        {"exchange": "xnys"},
        {"asset_class": "stock"},
        {"ticker": "AAPL"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_instrument_refuses_bad_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Instrument(**{"symbol": "AAPL", **changes})


def test_instrument_refuses_delisting_before_listing() -> None:
    with pytest.raises(ValidationError, match="delisted 2019-12-31 before listed 2020-01-01"):
        Instrument(symbol="X", listed=date(2020, 1, 1), delisted=date(2019, 12, 31))
    same_day = Instrument(symbol="X", listed=date(2020, 1, 1), delisted=date(2020, 1, 1))
    assert same_day.delisted == date(2020, 1, 1)


def test_instrument_is_frozen_and_hashable() -> None:
    inst = Instrument(symbol="AAPL")
    with pytest.raises(ValidationError):
        inst.symbol = "MSFT"  # type: ignore[misc]
    assert {inst, Instrument(symbol="AAPL")} == {inst}


def test_asset_class_values() -> None:
    assert {a.value for a in AssetClass} == {
        "equity", "etf", "index", "fx", "crypto", "future", "bond", "commodity",
    }  # fmt: skip


@pytest.mark.parametrize(
    "fields",
    [
        {"action_type": "split", "ratio": 4.0},
        {"action_type": "split", "ratio": 0.05},
        {"action_type": "stock_dividend", "ratio": 1.05},
        {"action_type": "dividend", "amount": 0.24, "currency": "USD"},
        {"action_type": "dividend", "amount": 0.0},
        {"action_type": "special_dividend", "amount": 1.0},
        {"action_type": "symbol_change", "new_symbol": "META"},
        {"action_type": "spinoff", "amount": 3.2, "new_symbol": "KD"},
        {"action_type": "merger"},
        {"action_type": "rights"},
        {"action_type": "delisting"},
    ],
    ids=lambda f: f["action_type"],
)
def test_corporate_action_accepts_consistent_events(fields: dict[str, Any]) -> None:
    action = CorporateAction(symbol="AAA", ex_date=date(2024, 6, 10), **fields)
    assert action.action_type in ACTION_TYPES


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action_type": "buyback"}, "unknown action_type"),
        ({"action_type": "split"}, "needs a ratio"),
        ({"action_type": "stock_dividend"}, "needs a ratio"),
        ({"action_type": "dividend"}, "needs an amount"),
        ({"action_type": "special_dividend"}, "needs an amount"),
        ({"action_type": "symbol_change"}, "needs new_symbol"),
        ({"action_type": "symbol_change", "new_symbol": ""}, "needs new_symbol"),
        ({"action_type": "split", "ratio": 0.0}, "greater than 0"),
        ({"action_type": "split", "ratio": -2.0}, "greater than 0"),
        ({"action_type": "dividend", "amount": -0.1}, "greater than or equal to 0"),
        ({"action_type": "dividend", "amount": 1.0, "currency": "usd"}, "pattern"),
        ({"action_type": "merger", "note": "x"}, "Extra inputs"),
    ],
)
def test_corporate_action_refuses_inconsistent_events(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CorporateAction(symbol="AAA", ex_date=date(2024, 6, 10), **fields)


def test_corporate_action_parses_iso_ex_date() -> None:
    action = CorporateAction(
        symbol="AAA",
        action_type="split",
        ex_date="2024-06-10",
        ratio=10,  # type: ignore[arg-type]
    )
    assert action.ex_date == date(2024, 6, 10)
    assert action.ratio == 10.0
