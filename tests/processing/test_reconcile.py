"""Cross-provider consensus on a real series delivered by three simulated vendors."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quality.conftest import lean_daily
from quantivista.errors import InvalidInputError
from quantivista.model.flags import QualityFlag
from quantivista.processing.reconcile import reconcile

DIS = int(QualityFlag.PROVIDER_DISAGREEMENT)
SINGLE = int(QualityFlag.SINGLE_SOURCE)


@pytest.fixture(scope="module")
def vendors() -> dict[str, pl.DataFrame]:
    base = lean_daily("ibm").slice(0, 400).drop("provider")
    noisy = base.with_columns(pl.col("open", "high", "low", "close") * 1.0005)  # within 0.5%
    bad = base.with_columns(
        close=pl.when(pl.int_range(pl.len()) % 50 == 7)
        .then(pl.col("close") * 1.2)
        .otherwise("close")
    ).with_columns(high=pl.max_horizontal("high", "close"))
    return {"alpha": base, "beta": noisy, "gamma": bad.filter(pl.int_range(pl.len()) != 3)}


def test_priority_keeps_the_preferred_provider(vendors: dict[str, pl.DataFrame]) -> None:
    out = reconcile(vendors, priority=["gamma", "alpha", "beta"], tolerance=0.005)
    bars = out.bars
    assert bars.height == 400
    assert bars["provider"].value_counts().sort("provider").rows() == [("alpha", 1), ("gamma", 399)]
    # gamma's 8 bad closes disagree with both others
    flagged = bars.filter((pl.col("quality_flags") & DIS) != 0)
    assert flagged.height == 8
    assert set(out.disagreements["provider"]) == {"alpha", "beta"}
    assert (out.disagreements["rel_diff"] > 0.15).all()


def test_median_outvotes_the_bad_source(vendors: dict[str, pl.DataFrame]) -> None:
    out = reconcile(vendors, method="median", priority=["gamma", "alpha", "beta"])
    spiked = vendors["alpha"].filter(pl.int_range(pl.len()) % 50 == 7)["ts"]
    winners = out.bars.filter(pl.col("ts").is_in(spiked.implode()))
    assert "gamma" not in winners["provider"].to_list()
    assert (winners["quality_flags"] & DIS != 0).all()  # still flagged: one source disagreed
    assert set(out.disagreements["provider"]) == {"gamma"}
    base = vendors["alpha"].select("ts", want="close")
    golden = out.bars.join(base, on="ts")
    rel = ((golden["close"] / golden["want"]) - 1).abs().max()
    assert rel is not None and rel <= 0.0005 + 1e-12


def test_single_source_keys_are_marked(vendors: dict[str, pl.DataFrame]) -> None:
    only = {"alpha": vendors["alpha"].slice(0, 10), "beta": vendors["beta"].slice(5, 10)}
    bars = reconcile(only).bars
    assert bars.height == 15
    assert bars.filter((pl.col("quality_flags") & SINGLE) != 0).height == 10
    with pytest.raises(InvalidInputError):
        reconcile({})


@settings(max_examples=30, deadline=None)
@given(shift=st.floats(-0.2, 0.2), tol=st.floats(0.0, 0.1))
def test_tolerance_decides_disagreement(shift: float, tol: float) -> None:
    base = lean_daily("ibm").slice(100, 5).drop("provider")
    other = base.with_columns(pl.col("open", "high", "low", "close") * (1 + shift))
    out = reconcile({"a": base, "b": other}, tolerance=tol)
    expect = abs(shift) > tol * (1 + 1e-9) + 1e-12
    flagged = ((out.bars["quality_flags"] & DIS) != 0).all()
    if abs(abs(shift) - tol) > 1e-9:
        assert flagged == expect
    assert out.bars["provider"].unique().to_list() == ["a"]
