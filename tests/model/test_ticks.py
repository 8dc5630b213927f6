"""Quote and trade ticks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from quantivista.model.ticks import Quote, Trade

TS = datetime(2024, 1, 2, 14, 30, 0, 123456, tzinfo=UTC)


def test_quote_mid() -> None:
    assert Quote(symbol="A", ts=TS, bid=99.5, ask=100.5).mid == 100.0
    assert Quote(symbol="A", ts=TS, bid=99.5).mid is None


def test_quote_refuses_crossed_book_and_naive_time() -> None:
    with pytest.raises(ValidationError, match="crossed"):
        Quote(symbol="A", ts=TS, bid=101.0, ask=100.0)
    with pytest.raises(ValidationError):
        Quote(symbol="A", ts=datetime(2024, 1, 2), bid=1.0)
    locked = Quote(symbol="A", ts=TS, bid=100.0, ask=100.0)
    assert locked.mid == 100.0


def test_trade_validation_and_dedup_key() -> None:
    t = Trade(symbol="A", ts=TS, price=10.0, size=100, trade_id="x1", provider="p")
    again = Trade(symbol="A", ts=TS, price=10.0, size=100.0, trade_id="x2", provider="q")
    assert t.dedup_key() == again.dedup_key() == ("A", TS, 10.0, 100.0)
    with pytest.raises(ValidationError):
        Trade(symbol="A", ts=TS, price=0.0, size=1)
    with pytest.raises(ValidationError):
        Trade(symbol="A", ts=TS, price=1.0, size=-1)
