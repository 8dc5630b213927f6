"""The one symbol rule, on single symbols and on frames."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista.errors import InvalidInputError
from quantivista.model.symbols import (
    MAX_SYMBOL_LENGTH,
    SYMBOL_PATTERN,
    canonical_symbol,
    canonical_symbols,
    symbol_problem,
)


@pytest.mark.parametrize(
    ("given_text", "canonical"),
    [("aapl", "AAPL"), (" PAD ", "PAD"), ("brk.b", "BRK.B"), ("^GSPC", "^GSPC"),
     ("EURUSD=X", "EURUSD=X"), ("x:btcusd", "X:BTCUSD"), ("BTC-USD", "BTC-USD"),
     ("RDS/A", "RDS/A"), ("VOD.L", "VOD.L"), ("7203.T", "7203.T"), ("M&M.NS", "M&M.NS")],
)  # fmt: skip
def test_real_vendor_symbols_are_canonicalized(given_text: str, canonical: str) -> None:
    assert canonical_symbol(given_text) == canonical


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("", "empty"), ("   ", "empty"), ("X\nY", "'\\n'"), ("A B", "' '"),
     ("A" * 33, "longer than 32"), ("-X", "must start"), ("AB\x00", "'\\x00'"),
     ("ÄPPLE", "'Ä'")],
)  # fmt: skip
def test_bad_symbols_are_refused_with_the_reason(bad: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason.replace("\\", "\\\\").replace("'", ".")):
        canonical_symbol(bad)


@given(st.text(max_size=40))
def test_canonical_symbols_always_match_the_pattern(text: str) -> None:
    try:
        symbol = canonical_symbol(text)
    except InvalidInputError:
        return
    assert SYMBOL_PATTERN.fullmatch(symbol)
    assert len(symbol) <= MAX_SYMBOL_LENGTH
    assert canonical_symbol(symbol) == symbol  # idempotent


_SPELLINGS = ["aapl", " MSFT", "X\nY", "", "BRK.B", "a" * 40, "AAPL\n", "A" * 33, "^GSPC", "ß"]


@given(st.lists(st.sampled_from(_SPELLINGS) | st.text(max_size=34), max_size=30))
def test_a_frame_agrees_with_the_single_symbol_rule(values: list[str]) -> None:
    out, problems = canonical_symbols(pl.Series("symbol", values, pl.String))
    for i, value in enumerate(values):
        symbol = value.strip().upper()
        assert out[i] == symbol
        expected = symbol_problem(symbol)
        assert (problems[i] if problems is not None else None) == expected


def test_a_clean_column_reports_no_problems() -> None:
    out, problems = canonical_symbols(pl.Series(["AAPL", "MSFT"] * 1000))
    assert problems is None
    assert out.to_list() == ["AAPL", "MSFT"] * 1000
