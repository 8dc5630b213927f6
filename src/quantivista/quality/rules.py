"""Validation rules: small declarative objects evaluated as Polars expressions over a batch.

Each rule names the rows it objects to with a boolean expression, sets one `QualityFlag`
bit and carries a severity: ERROR rows go to quarantine, WARNING rows are stored flagged.
Rules that need context (the exchange calendar, the rest of the batch) see it through
the columns the validator adds before evaluating them (`_session_ok`, `_aligned`, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from quantivista.model.flags import QualityFlag
from quantivista.model.jobs import Severity

__all__ = [
    "CONTEXT_RULES",
    "DEFAULT_RULES",
    "INTRADAY_RULES",
    "ROW_RULES",
    "SERIES_COLUMNS",
    "SERIES_RULES",
    "Rule",
]

_PRICES = ("open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class Rule:
    """One check: `violation()` is true on the rows that break it."""

    name: str
    flag: QualityFlag
    severity: Severity
    message: str
    violation: Callable[[], pl.Expr]
    needs: tuple[str, ...] = ()  # helper columns the validator must add first

    def expr(self) -> pl.Expr:
        """Return the violation expression, null-safe (null counts as no violation)."""
        return self.violation().fill_null(False).alias(self.name)


def _any(exprs: list[pl.Expr]) -> pl.Expr:
    return pl.any_horizontal(exprs)


def _missing() -> pl.Expr:
    return _any([pl.col(c).is_null() for c in _PRICES])


def _non_finite() -> pl.Expr:
    return _any([~pl.col(c).is_finite() for c in (*_PRICES, "volume", "vwap")])


def _non_positive() -> pl.Expr:
    return _any([pl.col(c) <= 0 for c in _PRICES])


def _negative_volume() -> pl.Expr:
    return pl.col("volume") < 0


def _ohlc_inconsistent() -> pl.Expr:
    # relative tolerance absorbs float noise from vendors that send 4-decimal strings
    tol = 1e-9
    hi = pl.max_horizontal("open", "close", "low") * (1 - tol)
    lo = pl.min_horizontal("open", "close", "high") * (1 + tol)
    return (pl.col("high") < hi) | (pl.col("low") > lo)


def _zero_volume() -> pl.Expr:
    return pl.col("volume") == 0


ROW_RULES: tuple[Rule, ...] = (
    Rule("missing_value", QualityFlag.MISSING_VALUE, Severity.ERROR,
         "open, high, low or close is missing", _missing),
    Rule("non_finite", QualityFlag.NON_FINITE, Severity.ERROR,
         "a price, volume or vwap is NaN or infinite", _non_finite),
    Rule("non_positive_price", QualityFlag.NON_POSITIVE_PRICE, Severity.ERROR,
         "a price is zero or negative", _non_positive),
    Rule("negative_volume", QualityFlag.NEGATIVE_VOLUME, Severity.ERROR,
         "volume is negative", _negative_volume),
    Rule("ohlc_inconsistent", QualityFlag.OHLC_INCONSISTENT, Severity.ERROR,
         "high is below open/close/low or low is above open/close/high", _ohlc_inconsistent),
    Rule("zero_volume", QualityFlag.ZERO_VOLUME, Severity.WARNING,
         "no volume traded in the bar", _zero_volume),
)  # fmt: skip

CONTEXT_RULES: tuple[Rule, ...] = (
    Rule("duplicate_conflict", QualityFlag.DUPLICATE_CONFLICT, Severity.ERROR,
         "several different bars share (symbol, timeframe, ts)",
         lambda: pl.col("_dup_conflict"), ("_dup_conflict",)),
    Rule("misaligned_ts", QualityFlag.MISALIGNED_TS, Severity.ERROR,
         "ts is not on the timeframe's grid (daily bars at 00:00 UTC, intraday on the "
         "session grid)", lambda: ~pl.col("_aligned"), ("_aligned",)),
    Rule("not_a_session", QualityFlag.NOT_A_SESSION, Severity.ERROR,
         "the exchange does not trade on this date", lambda: ~pl.col("_is_session"),
         ("_is_session",)),
    Rule("outside_session", QualityFlag.OUTSIDE_SESSION, Severity.WARNING,
         "intraday bar outside the regular session (pre/post market)",
         lambda: ~pl.col("_in_hours"), ("_in_hours",)),
)  # fmt: skip

SERIES_RULES: tuple[Rule, ...] = (
    Rule("out_of_order", QualityFlag.OUT_OF_ORDER, Severity.WARNING,
         "the bar arrived after a later bar of the same series (the store sorts it)",
         lambda: pl.col("_out_of_order"), ("_out_of_order",)),
    Rule("stale", QualityFlag.STALE, Severity.WARNING,
         "the bar repeats the previous bar exactly, in a run of identical bars",
         lambda: pl.col("_stale"), ("_stale",)),
    Rule("spike", QualityFlag.SPIKE, Severity.WARNING,
         "the close jumps far outside the rolling MAD of returns and reverts on the next bar, "
         "with no corporate action to explain it", lambda: pl.col("_spike"), ("_spike",)),
    Rule("provisional_spike", QualityFlag.SPIKE_PENDING, Severity.WARNING,
         "the newest bar of its series moves far outside the rolling MAD of returns: with no "
         "next bar yet it may be a spike or a real move; the next batch confirms or clears it",
         lambda: pl.col("_spike_pending"), ("_spike_pending",)),
    Rule("wick_spike", QualityFlag.SPIKE, Severity.WARNING,
         "the high or low lies far outside the open..close body relative to the return scale",
         lambda: pl.col("_wick"), ("_wick",)),
    Rule("split_mismatch", QualityFlag.SPLIT_MISMATCH, Severity.WARNING,
         "a split takes effect on this date but the price did not move by its ratio",
         lambda: pl.col("_split_mismatch"), ("_split_mismatch",)),
    Rule("split_jump", QualityFlag.SPLIT_MISMATCH, Severity.WARNING,
         "the price moved by a common split ratio but no split is known on this date",
         lambda: pl.col("_split_jump"), ("_split_jump",)),
)  # fmt: skip

INTRADAY_RULES: tuple[Rule, ...] = (
    Rule("bad_print", QualityFlag.BAD_PRINT, Severity.WARNING,
         "a 1-minute high, low or close far from its neighbours' closes that reverts the next "
         "minute (quality.intraday)", lambda: pl.col("_bad_print"), ("_bad_print",)),
)  # fmt: skip

DEFAULT_RULES: tuple[Rule, ...] = ROW_RULES + CONTEXT_RULES + SERIES_RULES + INTRADAY_RULES
SERIES_COLUMNS: frozenset[str] = frozenset(
    (
        "_spike",
        "_spike_pending",
        "_wick",
        "_stale",
        "_split_mismatch",
        "_split_jump",
        "_gap_s",
        "_bad_print",
    )
)
