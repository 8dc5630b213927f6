"""The one symbol rule: what a canonical symbol looks like, for every way bars come in.

A canonical symbol is stripped of surrounding blanks and upper-cased, 1 to 32 characters,
starting with a letter, a digit or `^` (Yahoo indexes), then letters, digits and the
punctuation vendors use inside tickers: `.` share classes and exchange suffixes (`BRK.B`,
`VOD.L`), `-` (`BTC-USD`), `/` (`RDS/A`), `=` (`EURUSD=X`), `:` (`X:BTCUSD`), `_` and `&`.
Blanks inside, control characters and anything else are refused.

Frames are checked on their distinct symbols, so a batch of a million rows costs a few
hundred string checks, not a million.
"""

from __future__ import annotations

import re

import polars as pl

from quantivista.errors import InvalidInputError

__all__ = [
    "MAX_SYMBOL_LENGTH",
    "SYMBOL_PATTERN",
    "canonical_symbol",
    "canonical_symbols",
    "symbol_problem",
]

MAX_SYMBOL_LENGTH = 32
_INNER = r"A-Z0-9.\-/=:_&^"  # the characters allowed after the first
SYMBOL_PATTERN = re.compile(rf"[A-Z0-9^][{_INNER}]{{0,{MAX_SYMBOL_LENGTH - 1}}}")
# the same rule as a polars (Rust) pattern, anchored: ASCII only, so a value it matches is
# unchanged by strip() and upper() and has no problem
_CANONICAL = rf"\A{SYMBOL_PATTERN.pattern}\z"
# up to this many rows a regex over every row costs less than finding the distinct values
_ONE_PASS_ROWS = 4096


def symbol_problem(text: str | None) -> str | None:
    """Return why `text` (already canonicalized) is not a valid symbol, or None if it is."""
    if text is None or text == "":
        return "empty symbol"
    if len(text) > MAX_SYMBOL_LENGTH:
        return f"symbol longer than {MAX_SYMBOL_LENGTH} characters ({len(text)})"
    if SYMBOL_PATTERN.fullmatch(text) is None:
        bad = sorted({c for c in text if not re.fullmatch(f"[{_INNER}]", c)})
        if not bad:
            return f"symbol {text!r} must start with a letter, a digit or ^"
        shown = ", ".join(repr(c) for c in bad)
        return f"symbol {text!r} has characters a ticker cannot hold: {shown}"
    return None


def canonical_symbol(text: str) -> str:
    """Return `text` stripped and upper-cased, or raise `InvalidInputError` saying why not."""
    symbol = text.strip().upper()
    problem = symbol_problem(symbol)
    if problem is not None:
        raise InvalidInputError(problem, symbol=text)
    return symbol


def canonical_symbols(symbols: pl.Series) -> tuple[pl.Series, pl.Series | None]:
    """Return `symbols` canonicalized and, aligned with them, each row's problem (null if none;
    None instead of the series when no row has one).

    Work is done once per distinct value; a column already canonical is returned as is.
    """
    out = symbols if symbols.dtype == pl.String else symbols.cast(pl.String)
    if out.len() <= _ONE_PASS_ROWS and not out.has_nulls() and out.str.contains(_CANONICAL).all():
        return out, None  # a small canonical batch (a stream's): one regex pass, no hashing
    mapping: dict[str, str] = {}
    problems: dict[str, str] = {}
    # every distinct value starts a run: hashing the run starts (one per series in the usual
    # batch) costs a tenth of hashing every row
    starts = out.filter(out.ne_missing(out.shift())).unique().drop_nulls()
    # canonical already (the usual batch): one regex over them, not a Python call per symbol
    starts = starts.filter(~starts.str.contains(_CANONICAL))
    for value in starts.to_list():
        symbol = value.strip().upper()
        if symbol != value:
            mapping[value] = symbol
        problem = symbol_problem(symbol)
        if problem is not None:
            problems[symbol] = problem
    if mapping:
        out = out.replace(list(mapping), list(mapping.values()))
    if not problems and not out.has_nulls():
        return out, None
    reasons = (
        pl.DataFrame({"symbol": out})
        .select(
            pl.when(pl.col("symbol").is_null())
            .then(pl.lit("empty symbol"))
            .otherwise(
                pl.col("symbol").replace_strict(problems, default=None, return_dtype=pl.String)
            )
        )
        .to_series()
    )
    return out, reasons.alias("problem")
