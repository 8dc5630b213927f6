"""Inject labelled errors into clean bars, so quality checks can be measured for recall.

Each fault is one kind of damage a real feed delivers; the labels say which row got which
fault, so a test or benchmark can compare what the validator caught with what was done.
"""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["FAULT_KINDS", "inject_faults"]

# kind -> what it does to the row
FAULT_KINDS: dict[str, str] = {
    "high_below_low": "high and low swapped, so high < low",
    "negative_price": "close negated",
    "zero_price": "open set to zero",
    "negative_volume": "volume negated (and -1 when it was zero)",
    "nan_close": "close missing (NaN)",
    "conflicting_duplicate": "the row is sent twice, the copy with a different close",
}


def inject_faults(
    bars: pl.DataFrame, rate: float, seed: int = 0, kinds: tuple[str, ...] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Damage about `rate` of the rows of `bars`; return (damaged bars, labels).

    Labels have columns symbol, ts, fault. Duplicated rows are appended at the end; every
    other fault edits the row in place. Deterministic for a given seed.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate must be within [0, 1], got {rate}")
    chosen_kinds = tuple(kinds or FAULT_KINDS)
    unknown = [k for k in chosen_kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds: {unknown}")
    n = bars.height
    rng = np.random.default_rng(seed)
    hit = rng.random(n) < rate
    kind_idx = rng.integers(0, len(chosen_kinds), n)
    names = pl.Series(chosen_kinds, dtype=pl.String).gather(kind_idx)
    kind = names.zip_with(pl.Series(hit), pl.Series([None] * n, dtype=pl.String))
    df = bars.with_columns(_fault=kind)
    f = pl.col("_fault")
    df = df.with_columns(
        high=pl.when(f == "high_below_low").then(pl.col("low")).otherwise(pl.col("high")),
        low=pl.when(f == "high_below_low").then(pl.col("high")).otherwise(pl.col("low")),
        close=pl.when(f == "negative_price")
        .then(-pl.col("close").abs() - 0.01)
        .when(f == "nan_close")
        .then(float("nan"))
        .otherwise(pl.col("close")),
        open=pl.when(f == "zero_price").then(0.0).otherwise(pl.col("open")),
        volume=pl.when(f == "negative_volume")
        .then(-pl.col("volume").abs() - 1.0)
        .otherwise(pl.col("volume")),
    )
    # a high/low swap on a flat bar changes nothing: make it a real inversion
    df = df.with_columns(
        low=pl.when((f == "high_below_low") & (pl.col("high") <= pl.col("low")))
        .then(pl.col("high") + 0.01)
        .otherwise(pl.col("low"))
    )
    copies = df.filter(f == "conflicting_duplicate").with_columns(
        close=pl.col("close") * 1.01 + 0.01, _fault=pl.lit(None, pl.String)
    )
    labels = df.filter(f.is_not_null()).select("symbol", "ts", f.alias("fault"))
    out = pl.concat([df, copies]).drop("_fault")
    return out, labels
