"""Security identifiers checked by their check digits (python-stdnum)."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
from stdnum import cusip, figi, isin
from stdnum.gb import sedol

from quantivista.errors import InvalidIdentifierError

__all__ = ["IDENTIFIER_KINDS", "identifier_problems", "validate_identifier"]

_CHECKS: dict[str, Callable[[str], str]] = {
    "isin": isin.validate,
    "cusip": cusip.validate,
    "sedol": sedol.validate,
    "figi": figi.validate,
}
IDENTIFIER_KINDS: tuple[str, ...] = tuple(_CHECKS)


def validate_identifier(kind: str, value: str) -> str:
    """Return `value` in its compact form, or raise `InvalidIdentifierError`."""
    check = _CHECKS.get(kind.lower())
    if check is None:
        raise InvalidIdentifierError(f"unknown identifier kind {kind!r}", kinds=IDENTIFIER_KINDS)
    try:
        return check(value)
    except Exception as exc:  # stdnum raises its own ValidationError subclasses
        raise InvalidIdentifierError(
            f"invalid {kind.upper()} {value!r}: {exc}", kind=kind, value=value
        ) from exc


def _problem(kind: str) -> Callable[[str], str]:
    def run(value: str) -> str:
        try:
            validate_identifier(kind, value)
        except InvalidIdentifierError as exc:
            return str(exc.args[0])
        return ""

    return run


def identifier_problems(frame: pl.DataFrame) -> pl.Series:
    """Return, per row, why its identifier columns are invalid ("" when they are fine).

    The check digit algorithms are scalar (stdnum), so each distinct value is checked once
    and the answers joined back; instrument tables have thousands of rows, not millions.
    """
    reasons: list[pl.Expr] = []
    for kind in IDENTIFIER_KINDS:
        if kind not in frame.columns:
            continue
        values = frame[kind].drop_nulls().unique()
        verdict = dict(zip(values, values.map_elements(_problem(kind), pl.String()), strict=True))
        reasons.append(pl.col(kind).replace_strict(verdict, default="", return_dtype=pl.String()))
    if not reasons:
        return pl.Series("problem", [""] * frame.height, pl.String())
    joined = frame.select(
        pl.concat_str([r.fill_null("") for r in reasons], separator="; ")
        .str.strip_chars("; ")
        .alias("problem")
    )
    return joined.to_series()
