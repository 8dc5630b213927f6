"""Bits of the `quality_flags` column: one bit per rule outcome, 0 means clean."""

from __future__ import annotations

from enum import IntFlag

__all__ = ["QualityFlag"]


class QualityFlag(IntFlag):
    """A rule outcome recorded on a bar. Bits are stable: never renumber, only append."""

    NONE = 0
    OHLC_INCONSISTENT = 1 << 0
    NON_POSITIVE_PRICE = 1 << 1
    NON_FINITE = 1 << 2
    NEGATIVE_VOLUME = 1 << 3
    DUPLICATE = 1 << 4
    DUPLICATE_CONFLICT = 1 << 5
    MISALIGNED_TS = 1 << 6
    NOT_A_SESSION = 1 << 7
    MISSING_VALUE = 1 << 8
    STALE = 1 << 9
    SPIKE = 1 << 10
    GAP_FILLED = 1 << 11
    PROVIDER_DISAGREEMENT = 1 << 12
    SINGLE_SOURCE = 1 << 13
    OUT_OF_ORDER = 1 << 14
    OUTSIDE_SESSION = 1 << 15
    SPLIT_MISMATCH = 1 << 16
    BUSINESS_RULE = 1 << 17
    ZERO_VOLUME = 1 << 18
    TS_SNAPPED = 1 << 19  # an off-grid intraday bar moved to its grid slot on request
    # the newest bar of its series moved like a spike; the next bar confirms (SPIKE) or clears it
    SPIKE_PENDING = 1 << 20
    BAD_PRINT = 1 << 21  # a 1-minute high/low/close far from its neighbours that reverts

    @classmethod
    def names_of(cls, bits: int) -> list[str]:
        """Return the lowercase names of the flags set in `bits`."""
        return [f.name.lower() for f in cls if f.value and bits & f.value and f.name]
