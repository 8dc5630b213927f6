"""Benchmark analytics: period returns, volatility, drawdown, beta, correlation, tracking.

Inputs are long frames of levels or prices (ts, level). Returns are simple daily returns;
annualization uses `periods_per_year` (252 trading days by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from quantivista.errors import InvalidInputError

__all__ = ["compare", "period_returns", "portfolio_levels", "returns_from_levels"]


def returns_from_levels(levels: pl.DataFrame, value: str = "level") -> pl.DataFrame:
    """Return ts, ret (simple returns) from a frame of ts and a level or price column."""
    return (
        levels.sort("ts")
        .select("ts", ret=pl.col(value) / pl.col(value).shift(1) - 1.0)
        .drop_nulls("ret")
    )


def period_returns(levels: pl.DataFrame, every: str = "1y", value: str = "level") -> pl.DataFrame:
    """Return the return of each calendar period (`every`: "1mo", "3mo", "1y", ...).

    A period's return runs from the last level before it (or its first level for the very
    first period) to its last level.
    """
    df = levels.sort("ts").with_columns(_p=pl.col("ts").dt.truncate(every))
    return (
        df.with_columns(_prev=pl.col(value).shift(1))
        .group_by("_p", maintain_order=True)
        .agg(
            start=pl.col("_prev").first().fill_null(pl.col(value).first()),
            end=pl.col(value).last(),
        )
        .select(period="_p", ret=pl.col("end") / pl.col("start") - 1.0)
    )


def portfolio_levels(
    bars: pl.DataFrame, weights: Mapping[str, float], value: str = "close"
) -> pl.DataFrame:
    """Return the level (start 1.0) of a portfolio rebalanced daily to `weights`."""
    total = sum(weights.values())
    if total == 0:
        raise InvalidInputError("portfolio weights sum to zero")
    w = pl.DataFrame({"symbol": list(weights), "_w": [v / total for v in weights.values()]})
    rets = (
        bars.sort("symbol", "ts")
        .with_columns(_r=(pl.col(value) / pl.col(value).shift(1) - 1.0).over("symbol"))
        .join(w, on="symbol", how="inner")
        .group_by("ts")
        .agg(_r=(pl.col("_w") * pl.col("_r").fill_null(0.0)).sum())
        .sort("ts")
    )
    return rets.select("ts", level=(1.0 + pl.col("_r")).cum_prod())


def _max_drawdown(levels: pl.Series) -> float:
    drawdown = levels / levels.cum_max() - 1.0
    low = drawdown.min()
    return float(low) if isinstance(low, int | float) else 0.0


def compare(
    subject: pl.DataFrame,
    benchmark: pl.DataFrame,
    *,
    value: str = "level",
    periods_per_year: int = 252,
) -> dict[str, Any]:
    """Compare a subject series with a benchmark series (both ts + `value`) on common dates.

    Returns total return of each, annualized volatility of each, maximum drawdown of each,
    beta, correlation, tracking error (annualized std of active returns) and information
    ratio (annualized mean active return / tracking error).
    """
    joined = (
        subject.select("ts", s=pl.col(value))
        .join(benchmark.select("ts", b=pl.col(value)), on="ts", how="inner")
        .sort("ts")
    )
    if joined.height < 3:
        raise InvalidInputError("need at least three common dates to compare", rows=joined.height)
    rets = joined.select(
        rs=pl.col("s") / pl.col("s").shift(1) - 1.0, rb=pl.col("b") / pl.col("b").shift(1) - 1.0
    ).drop_nulls()
    stats = rets.select(
        cov=pl.cov("rs", "rb"),
        var_b=pl.col("rb").var(),
        corr=pl.corr("rs", "rb"),
        vol_s=pl.col("rs").std(),
        vol_b=pl.col("rb").std(),
        te=(pl.col("rs") - pl.col("rb")).std(),
        active=(pl.col("rs") - pl.col("rb")).mean(),
    ).row(0, named=True)
    root = math.sqrt(periods_per_year)
    te = stats["te"] * root
    return {
        "days": joined.height,
        "total_return": joined["s"][-1] / joined["s"][0] - 1.0,
        "benchmark_total_return": joined["b"][-1] / joined["b"][0] - 1.0,
        "volatility": stats["vol_s"] * root,
        "benchmark_volatility": stats["vol_b"] * root,
        "max_drawdown": _max_drawdown(joined["s"]),
        "benchmark_max_drawdown": _max_drawdown(joined["b"]),
        "beta": stats["cov"] / stats["var_b"] if stats["var_b"] else math.nan,
        "correlation": stats["corr"],
        "tracking_error": te,
        "information_ratio": stats["active"] * periods_per_year / te if te else math.nan,
    }
