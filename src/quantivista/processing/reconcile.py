"""Cross-provider consensus: one golden bar per (symbol, timeframe, ts) from several sources.

Each key's golden bar is one provider's whole bar (so OHLC stays self-consistent):
- `priority`: the first provider of the priority list that delivered the key;
- `median`: the provider whose close is nearest the median close of all providers
  (ties broken by priority), which outvotes one bad source among three or more.
Every other provider's bar is compared with the golden one on open, high, low and close;
a relative difference above `tolerance` sets PROVIDER_DISAGREEMENT on the golden bar and
lists the pair in `disagreements`. A key only one provider delivered (when several were
asked) gets SINGLE_SOURCE. The `provider` column names the winner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from quantivista.errors import InvalidInputError
from quantivista.model.flags import QualityFlag
from quantivista.model.schema import BAR_COLUMNS, BAR_KEY, coerce_bars

__all__ = ["Consensus", "reconcile"]

_OHLC = ("open", "high", "low", "close")


@dataclass(slots=True)
class Consensus:
    """Golden bars plus the provider bars that disagreed with them."""

    bars: pl.DataFrame  # canonical schema, one row per key
    disagreements: pl.DataFrame  # key, provider, golden_provider, close, golden_close, rel_diff


def reconcile(
    frames: pl.DataFrame | Mapping[str, pl.DataFrame],
    *,
    priority: Sequence[str] | None = None,
    method: Literal["priority", "median"] = "priority",
    tolerance: float = 0.005,
) -> Consensus:
    """Merge several providers' bars for the same keys into golden bars (see module doc).

    `frames` is one frame with a `provider` column or a mapping provider -> frame.
    `priority` lists providers best first (default: alphabetical).
    """
    if isinstance(frames, Mapping):
        parts = [coerce_bars(df, provider=name) for name, df in frames.items()]
        if not parts:
            raise InvalidInputError("no frames to reconcile")
        df = pl.concat(parts)
    else:
        df = coerce_bars(frames)
    if df["provider"].null_count():
        raise InvalidInputError("every bar needs a provider to reconcile")
    if method not in ("priority", "median"):
        raise InvalidInputError("method is priority or median", method=method)
    providers = sorted(df["provider"].unique().to_list())
    order = list(priority or providers)
    order += [p for p in providers if p not in order]
    ranked = df.with_columns(
        _rank=pl.col("provider").replace_strict(
            order, list(range(len(order))), return_dtype=pl.Int32
        ),
        _n=pl.len().over(BAR_KEY),
    )
    if method == "median":
        ranked = ranked.with_columns(
            _dist=(pl.col("close") - pl.col("close").median().over(BAR_KEY)).abs()
        )
        sort_by = [*BAR_KEY, "_dist", "_rank"]
    else:
        sort_by = [*BAR_KEY, "_rank"]
    ranked = ranked.sort(sort_by)
    golden = ranked.unique(list(BAR_KEY), keep="first", maintain_order=True)
    # compare every other provider's bar with the golden bar of its key
    gold_vals = golden.select(*BAR_KEY, golden_provider="provider", **{f"_g_{c}": c for c in _OHLC})
    others = ranked.join(gold_vals, on=list(BAR_KEY)).filter(
        pl.col("provider") != pl.col("golden_provider")
    )
    diff = pl.max_horizontal(
        [(pl.col(c) / pl.col(f"_g_{c}") - 1).abs().fill_nan(float("inf")) for c in _OHLC]
    )
    others = others.with_columns(rel_diff=diff)
    bad = others.filter(pl.col("rel_diff") > tolerance)
    disagreements = bad.select(
        *BAR_KEY,
        "provider",
        "golden_provider",
        "close",
        golden_close="_g_close",
        rel_diff="rel_diff",
    )
    bad_keys = bad.select(BAR_KEY).unique().with_columns(_bad=pl.lit(True))
    several = len(providers) > 1
    out = golden.join(bad_keys, on=list(BAR_KEY), how="left").with_columns(
        quality_flags=pl.col("quality_flags")
        | pl.when(pl.col("_bad").fill_null(False))
        .then(pl.lit(int(QualityFlag.PROVIDER_DISAGREEMENT), pl.UInt32))
        .otherwise(pl.lit(0, pl.UInt32))
        | pl.when((pl.col("_n") == 1) & several)
        .then(pl.lit(int(QualityFlag.SINGLE_SOURCE), pl.UInt32))
        .otherwise(pl.lit(0, pl.UInt32))
    )
    return Consensus(out.select(BAR_COLUMNS).sort(list(BAR_KEY)), disagreements.sort(list(BAR_KEY)))
