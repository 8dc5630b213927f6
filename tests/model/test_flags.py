"""Quality flags: stable bit positions, fit in uint32, names of a bit set."""

from __future__ import annotations

import polars as pl
import pytest

from quantivista.model.flags import QualityFlag

# Bits are persisted in every stored bar: these numbers must never change.
STABLE_BITS = {
    "NONE": 0,
    "OHLC_INCONSISTENT": 0,
    "NON_POSITIVE_PRICE": 1,
    "NON_FINITE": 2,
    "NEGATIVE_VOLUME": 3,
    "DUPLICATE": 4,
    "DUPLICATE_CONFLICT": 5,
    "MISALIGNED_TS": 6,
    "NOT_A_SESSION": 7,
    "MISSING_VALUE": 8,
    "STALE": 9,
    "SPIKE": 10,
    "GAP_FILLED": 11,
    "PROVIDER_DISAGREEMENT": 12,
    "SINGLE_SOURCE": 13,
    "OUT_OF_ORDER": 14,
    "OUTSIDE_SESSION": 15,
    "SPLIT_MISMATCH": 16,
    "BUSINESS_RULE": 17,
    "ZERO_VOLUME": 18,
    "TS_SNAPPED": 19,
    "SPIKE_PENDING": 20,
    "BAD_PRINT": 21,
}


@pytest.mark.parametrize("name", [n for n in STABLE_BITS if n != "NONE"])
def test_bit_positions_are_stable(name: str) -> None:
    assert QualityFlag[name].value == 1 << STABLE_BITS[name]


def test_none_is_zero_and_every_other_flag_is_one_distinct_bit() -> None:
    assert QualityFlag.NONE == 0
    values = [f.value for f in QualityFlag if f.name != "NONE"]
    assert all(v > 0 and v & (v - 1) == 0 for v in values)
    assert len(set(values)) == len(values)
    # existing flags can only be appended to: every member of the enum is pinned above
    assert {f.name for f in QualityFlag} <= set(STABLE_BITS)


def test_all_flags_fit_the_uint32_column() -> None:
    combined = 0
    for flag in QualityFlag:
        combined |= flag
    assert combined < 2**32
    assert pl.Series([int(combined)]).cast(pl.UInt32).item() == combined


def test_names_of_a_bit_set() -> None:
    bits = QualityFlag.ZERO_VOLUME | QualityFlag.OHLC_INCONSISTENT | QualityFlag.SPIKE
    assert QualityFlag.names_of(bits) == ["ohlc_inconsistent", "spike", "zero_volume"]
    assert QualityFlag.names_of(int(QualityFlag.OUTSIDE_SESSION)) == ["outside_session"]


def test_names_of_zero_is_empty() -> None:
    assert QualityFlag.names_of(0) == []


def test_names_of_ignores_unknown_high_bits() -> None:
    assert QualityFlag.names_of((1 << 31) | int(QualityFlag.STALE)) == ["stale"]
