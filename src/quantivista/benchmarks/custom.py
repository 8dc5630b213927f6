"""Custom benchmarks: fixed, equal or capitalization weights, rebalanced on a schedule.

Between rebalances the holdings drift with prices. For a period k whose weights w_i were
set at the close before it (the base), the level is

    L(t) = L(base_k) x sum_i w_i x P_i(t) / P_i(base_k)

with P the split-adjusted close (price return) or the dividend-adjusted close (total
return, each dividend reinvested at its ex-date close). All long-format Polars:
period ids by `dt.truncate`, bases by shift/forward-fill per symbol, one group-by per day.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import polars as pl

from quantivista.actions.adjust import Adjust, adjust_bars
from quantivista.errors import InvalidInputError

__all__ = ["Rebalance", "Weighting", "custom_benchmark"]

Rebalance = Literal["none", "monthly", "quarterly", "annual"]
Weighting = Literal["equal", "cap"] | Mapping[str, float]
_EVERY = {"monthly": "1mo", "quarterly": "3mo", "annual": "1y"}


def _period(rebalance: str) -> pl.Expr:
    if rebalance == "none":
        return pl.lit(0, pl.Int64)
    if rebalance not in _EVERY:
        raise InvalidInputError(
            "rebalance must be none, monthly, quarterly or annual", rebalance=rebalance
        )
    return pl.col("ts").dt.truncate(_EVERY[rebalance]).dt.epoch("d")


def custom_benchmark(
    bars: pl.DataFrame,
    weights: Weighting = "equal",
    *,
    rebalance: Rebalance = "quarterly",
    total_return: bool = False,
    actions: pl.DataFrame | None = None,
    base_level: float = 100.0,
) -> pl.DataFrame:
    """Return the level of a custom benchmark over the bars' dates: columns ts, level.

    `bars` are raw daily bars (symbol, ts, close; `market_cap` needed for "cap" weights)
    of every constituent on the same dates; `actions` (canonical schema) adjust them for
    splits, and for dividends too when `total_return`. `weights` maps symbols to fixed
    weights (normalized to sum to 1), or is "equal" or "cap".
    """
    needed = ["symbol", "ts", "close"] + (["market_cap"] if weights == "cap" else [])
    missing = [c for c in needed if c not in bars.columns]
    if missing:
        raise InvalidInputError(f"benchmark bars lack columns: {', '.join(missing)}")
    px = bars.select(needed).sort("symbol", "ts")
    if actions is not None and actions.height:
        # C_e/(C_e + D) makes the ex-day return exactly (C_e + D)/C_prev: the dividend
        # reinvested at the ex-date close, the usual total-return definition
        mode: Adjust = "all" if total_return else "splits"
        px = adjust_bars(px, actions, adjust=mode, dividend_convention="alpha_vantage")
    symbols = px["symbol"].unique().sort().to_list()
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(symbols))
        if unknown:
            raise InvalidInputError("weights name symbols without bars", symbols=unknown)
        total = sum(weights.values())
        if total <= 0:
            raise InvalidInputError("weights must sum to a positive number")
        fixed = pl.DataFrame({"symbol": list(weights), "_w": [v / total for v in weights.values()]})
    px = px.with_columns(_period=_period(rebalance))
    # the base of a period: the last close before it (the first close for the first period)
    starts = (pl.col("_period") != pl.col("_period").shift(1)).fill_null(True)
    base = pl.when(starts).then(pl.col("close").shift(1).fill_null(pl.col("close")))
    px = px.with_columns(_base=base.over("symbol")).with_columns(
        pl.col("_base").forward_fill().over("symbol")
    )
    if weights == "cap":
        cap_base = pl.when(starts).then(
            pl.col("market_cap").shift(1).fill_null(pl.col("market_cap"))
        )
        px = px.with_columns(_cap=cap_base.over("symbol")).with_columns(
            pl.col("_cap").forward_fill().over("symbol")
        )
        px = px.with_columns(_w=pl.col("_cap") / pl.col("_cap").sum().over("ts"))
    elif weights == "equal":
        px = px.with_columns(_w=1.0 / pl.len().over("ts"))
    else:
        px = px.join(fixed, on="symbol", how="inner")
    daily = (
        px.group_by("ts", maintain_order=False)
        .agg(
            pl.col("_period").first(),
            _f=(pl.col("_w") * pl.col("close") / pl.col("_base")).sum(),
        )
        .sort("ts")
    )
    # level at each period's base: product of the previous periods' closing factors
    ends = daily.group_by("_period").agg(pl.col("_f").last()).sort("_period")
    ends = ends.with_columns(_carry=pl.col("_f").cum_prod().shift(1).fill_null(1.0))
    return (
        daily.join(ends.select("_period", "_carry"), on="_period")
        .sort("ts")
        .select("ts", level=base_level * pl.col("_carry") * pl.col("_f"))
    )
