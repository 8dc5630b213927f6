"""Custom benchmarks and analytics against numbers worked out by hand."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from quantivista.benchmarks import (
    INDICES,
    compare,
    custom_benchmark,
    period_returns,
    portfolio_levels,
    register_indices,
)
from quantivista.errors import InvalidInputError
from quantivista.reference.instruments import InstrumentMaster

DAYS = [date(2024, 1, 30), date(2024, 1, 31), date(2024, 2, 1), date(2024, 2, 2)]


def _bars(caps: bool = False) -> pl.DataFrame:
    df = pl.DataFrame(
        {
            "symbol": ["A"] * 4 + ["B"] * 4,
            "ts": DAYS * 2,
            "close": [10.0, 11.0, 11.0, 12.1, 20.0, 20.0, 22.0, 22.0],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    if caps:  # A is three times B at every base
        df = df.with_columns(
            market_cap=pl.when(pl.col("symbol") == "A").then(300.0).otherwise(100.0)
        )
    return df


def test_equal_weight_monthly_rebalance() -> None:
    levels = custom_benchmark(_bars(), "equal", rebalance="monthly")
    # Jan: +0%, then A +10% -> 105; Feb rebalanced at Jan 31 closes (A 11, B 20):
    # Feb 1: B +10% -> 105 x 1.05; Feb 2: A +10% since base, B +10% -> 105 x 1.10
    assert levels["level"].to_list() == pytest.approx([100.0, 105.0, 110.25, 115.5])


def test_buy_and_hold_drifts_without_rebalancing() -> None:
    levels = custom_benchmark(_bars(), "equal", rebalance="none")
    # half in A (10 -> 12.1), half in B (20 -> 22) from the first day
    assert levels["level"].to_list() == pytest.approx([100.0, 105.0, 110.0, 115.5])


def test_fixed_and_cap_weights() -> None:
    fixed = custom_benchmark(_bars(), {"A": 3.0, "B": 1.0}, rebalance="monthly")
    # Jan 31: .75 x 1.1 + .25 = 1.075; Feb 1: 1.075 x (.75 + .25 x 1.1) = 1.101875
    assert fixed["level"].to_list()[:3] == pytest.approx([100.0, 107.5, 110.1875])
    cap = custom_benchmark(_bars(caps=True), "cap", rebalance="monthly")
    assert cap["level"].to_list() == pytest.approx(fixed["level"].to_list())


def test_total_return_reinvests_dividends() -> None:
    actions = pl.DataFrame(
        {"symbol": ["B"], "action_type": ["dividend"], "ex_date": [DAYS[2]], "amount": [2.0]}
    )
    price = custom_benchmark(_bars(), "equal", rebalance="monthly", actions=actions)
    total = custom_benchmark(
        _bars(), "equal", rebalance="monthly", actions=actions, total_return=True
    )
    assert price["level"][2] == pytest.approx(110.25)
    # B on Feb 1 returns (22 + 2) / 20 - 1 = 20%: 105 x (0.5 + 0.5 x 1.2)
    assert total["level"][2] == pytest.approx(115.5)


def test_bad_benchmark_inputs_raise() -> None:
    with pytest.raises(InvalidInputError):
        custom_benchmark(_bars(), {"ZZZ": 1.0})
    with pytest.raises(InvalidInputError):
        custom_benchmark(_bars(), "equal", rebalance="weekly")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        custom_benchmark(_bars(), "cap")


def test_compare_matches_hand_computed_statistics() -> None:
    ts = pl.Series([date(2024, 1, d) for d in (2, 3, 4, 5)]).cast(pl.Datetime("us", "UTC"))
    subject = pl.DataFrame({"ts": ts, "level": [100.0, 110.0, 99.0, 108.9]})
    bench = pl.DataFrame({"ts": ts, "level": [100.0, 105.0, 94.5, 103.95]})
    out = compare(subject, bench)
    assert out["total_return"] == pytest.approx(0.089)
    assert out["benchmark_total_return"] == pytest.approx(0.0395)
    assert out["beta"] == pytest.approx(14 / 13)
    assert out["max_drawdown"] == pytest.approx(-0.1)
    assert out["benchmark_max_drawdown"] == pytest.approx(-0.1)
    assert out["volatility"] == pytest.approx(math.sqrt(0.04 / 3) * math.sqrt(252))
    assert out["tracking_error"] == pytest.approx(math.sqrt(0.0025 / 3) * math.sqrt(252))
    assert out["information_ratio"] == pytest.approx(4.2 / out["tracking_error"])
    assert out["correlation"] == pytest.approx(0.07 / math.sqrt(0.08 * 0.065))


def test_period_returns_and_portfolio_levels() -> None:
    ts = pl.Series([date(2023, 12, 29), date(2024, 1, 31), date(2024, 2, 29)])
    levels = pl.DataFrame({"ts": ts, "level": [100.0, 110.0, 99.0]})
    assert period_returns(levels, "1mo")["ret"].to_list() == pytest.approx([0.0, 0.1, -0.1])
    port = portfolio_levels(_bars(), {"A": 0.5, "B": 0.5})
    assert port["level"].to_list()[:2] == pytest.approx([1.0, 1.05])


def test_indices_register_as_index_instruments(tmp_path: Path) -> None:
    master = InstrumentMaster(tmp_path)
    assert register_indices(master).instruments == INDICES.height
    spx = master.lookup("^GSPC", on="2020-01-02")
    assert spx is not None and spx.asset_class == "index" and spx.name == "S&P 500"
