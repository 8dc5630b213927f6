from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.providers.simulator import FAULT_KINDS, SimulatedMarket, inject_faults


@pytest.fixture(scope="module")
def market() -> SimulatedMarket:
    """A 12-instrument market that has closed through 2026-11-20 (overrides the shared one)."""
    return SimulatedMarket(seed=7, universe_size=12, as_of="2026-11-23")


@pytest.fixture(scope="module")
def clean(market: SimulatedMarket) -> pl.DataFrame:
    return pl.concat([market.daily(s, "2018-01-01", "2026-11-20") for s in market.symbols()[:6]])


def test_no_faults_at_rate_zero(clean: pl.DataFrame) -> None:
    damaged, labels = inject_faults(clean, 0.0, seed=1)
    assert damaged.equals(clean)
    assert labels.is_empty()


def test_every_fault_does_the_damage_it_names(clean: pl.DataFrame) -> None:
    damaged, labels = inject_faults(clean, 0.2, seed=3)
    assert set(labels["fault"].unique()) == set(FAULT_KINDS)
    dups = labels.filter(pl.col("fault") == "conflicting_duplicate").height
    assert damaged.height == clean.height + dups
    first = damaged.head(clean.height)  # appended copies come last
    joined = first.with_row_index().join(
        labels.with_row_index("label_row"), on=["symbol", "ts"], how="left"
    )

    def rows(kind: str) -> pl.DataFrame:
        return joined.filter(pl.col("fault") == kind)

    assert (rows("high_below_low")["high"] < rows("high_below_low")["low"]).all()
    assert (rows("negative_price")["close"] < 0).all()
    assert (rows("zero_price")["open"] == 0).all()
    assert (rows("negative_volume")["volume"] < 0).all()
    assert rows("nan_close")["close"].is_nan().all()
    untouched = joined.filter(pl.col("fault").is_null())
    assert untouched.drop("index", "label_row", "fault").equals(
        clean.join(labels, on=["symbol", "ts"], how="anti")
    )


def test_conflicting_duplicates_share_the_key_but_not_the_close(clean: pl.DataFrame) -> None:
    damaged, labels = inject_faults(clean, 0.1, seed=5, kinds=("conflicting_duplicate",))
    groups = damaged.group_by("symbol", "ts").agg(pl.col("close").n_unique(), pl.len())
    dup = groups.filter(pl.col("len") == 2)
    assert dup.height == labels.height > 0
    assert (dup["close"] == 2).all()


def test_faults_are_deterministic_per_seed(clean: pl.DataFrame) -> None:
    a = inject_faults(clean, 0.05, seed=11)
    b = inject_faults(clean, 0.05, seed=11)
    c = inject_faults(clean, 0.05, seed=12)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[1].equals(c[1])


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_the_fault_share_follows_the_rate(clean: pl.DataFrame, rate: float, seed: int) -> None:
    _, labels = inject_faults(clean, rate, seed=seed)
    n = clean.height
    sd = math.sqrt(n * rate * (1 - rate)) + 1
    assert abs(labels.height - n * rate) < 6 * sd


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rates_outside_zero_one_are_refused(clean: pl.DataFrame, rate: float) -> None:
    with pytest.raises(ValueError, match="fault rate"):
        inject_faults(clean, rate)


def test_unknown_fault_kinds_are_refused(clean: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        inject_faults(clean, 0.1, kinds=("gremlins",))
