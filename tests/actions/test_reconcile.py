"""Reconciliation of actions across sources, storage of new events and bus publication."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from quantivista import Platform
from quantivista.actions.reconcile import reconcile_actions
from quantivista.actions.sources import alpha_vantage_actions, polygon_actions, yahoo_actions
from quantivista.bus.events import Event

from .conftest import alpha_vantage_frame


def _yahoo_aapl() -> pl.DataFrame:
    # Yahoo reports dividends in today's shares: 2012-08-09 $2.65 appears as 2.65/28
    return pl.DataFrame(
        {
            "Date": [date(2012, 8, 9), date(2014, 6, 9), date(2020, 8, 31), date(2020, 11, 6)],
            "Dividends": [2.65 / 28, 0.0, 0.0, 0.205],
            "Stock Splits": [0.0, 7.0, 4.0, 0.0],
        }
    )


def test_yahoo_dividends_are_turned_back_into_cash_as_paid() -> None:
    events = yahoo_actions(_yahoo_aapl(), "AAPL")
    div = events.filter(pl.col("ex_date") == date(2012, 8, 9))
    assert div["amount"][0] == pytest.approx(2.65)
    assert events.filter(pl.col("action_type") == "split")["ratio"].to_list() == [7.0, 4.0]


def test_same_event_from_three_sources_is_one_event_and_conflicts_are_reported() -> None:
    av = alpha_vantage_actions(alpha_vantage_frame("AAPL")).filter(
        pl.col("ex_date") >= date(2012, 1, 1)
    )
    yahoo = yahoo_actions(_yahoo_aapl(), "AAPL")
    polygon = polygon_actions(
        splits=[
            {"ticker": "AAPL", "execution_date": "2020-08-31", "split_from": 1, "split_to": 4},
            # one day off and a wrong ratio: same event, a value conflict
            {"ticker": "AAPL", "execution_date": "2014-06-10", "split_from": 1, "split_to": 8},
        ]
    )
    report = reconcile_actions(
        {"alpha_vantage": av, "yahoo": yahoo, "polygon": polygon},
        priority=["alpha_vantage", "yahoo", "polygon"],
    )
    assert report.events.height == av.height  # nothing duplicated
    splits = report.events.filter(pl.col("action_type") == "split")
    assert splits["ex_date"].to_list() == [date(2014, 6, 9), date(2020, 8, 31)]
    assert set(splits["provider"]) == {"alpha_vantage"}
    value = report.conflicts.filter(pl.col("problem") == "value")
    assert value.select("provider", "ex_date", "value").rows() == [
        ("polygon", date(2014, 6, 10), 8.0)
    ]


def test_only_new_events_are_stored_and_published(platform: Platform) -> None:
    seen: list[Event] = []
    platform.runtime.bus.subscribe("actions.*", seen.append)
    first = pl.DataFrame(
        {"symbol": ["X", "X"], "action_type": ["dividend", "split"],
         "ex_date": [date(2024, 3, 1), date(2024, 6, 3)], "amount": [0.5, None],
         "ratio": [None, 2.0]}
    )  # fmt: skip
    report = platform.ingest_actions({"vendor_a": first})
    assert report.new == 2 and len(seen) == 1
    # the same events again, from another vendor and a day off: nothing new, no event
    again = first.with_columns(pl.col("ex_date") + pl.duration(days=1))
    report = platform.ingest_actions({"vendor_b": again})
    assert report.new == 0 and len(seen) == 1
    assert platform.actions("X").height == 2
    # a genuinely new dividend is stored and published; a disagreeing amount is a conflict
    later = pl.DataFrame(
        {"symbol": ["X", "X"], "action_type": ["dividend", "dividend"],
         "ex_date": [date(2024, 3, 1), date(2024, 9, 2)], "amount": [0.55, 0.5]}
    )  # fmt: skip
    report = platform.ingest_actions({"vendor_b": later})
    assert report.new == 1 and len(seen) == 2
    assert report.conflicts["problem"].to_list() == ["value"]
    assert platform.actions("X").height == 3
