"""Re-validate the whole store after a rule change: in this process, or on Dask distributed.

Validation rules look along one series at a time, so the universe splits into independent
partitions without changing any finding. Partitions are the lake's buckets (symbols hashed
into `storage.buckets` files): on the lake each Dask task reads one bucket file, on
PostgreSQL the same grouping of symbols. Each task opens the store itself (a Dask worker
may be another host), validates its symbols with the current rules and returns per-symbol
counts; nothing is written: the report says what the rules would reject now.

    report = revalidate(settings, engine="dask")   # LocalCluster on 127.0.0.1, or
                                                    # dask.scheduler_address
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from quantivista.config import Settings
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.quality.validate import Validator
from quantivista.services.universe import (
    Progress,
    build_validator,
    dask_client,
    follow,
    partitions,
)
from quantivista.storage import open_backend

__all__ = [
    "RevalidationReport",
    "build_validator",
    "check_partition",
    "partitions",
    "revalidate",
]

_PER_SYMBOL = {"symbol": pl.String, "bars": pl.Int64, "rejected": pl.Int64, "flagged": pl.Int64}


@dataclass(frozen=True)
class RevalidationReport:
    """What the current rules find in the stored bars of one timeframe."""

    timeframe: str
    engine: str
    partitions: int
    per_symbol: pl.DataFrame  # symbol, bars, rejected, flagged (sorted by symbol)
    rule_counts: dict[str, int]
    elapsed_s: float

    @property
    def bars(self) -> int:
        """Return the bars checked."""
        return int(self.per_symbol["bars"].sum())

    @property
    def rejected(self) -> int:
        """Return the bars the rules reject now."""
        return int(self.per_symbol["rejected"].sum())


def check_partition(
    settings: Settings, symbols: Sequence[str], timeframe: str
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Validate the stored bars of `symbols`; return per-symbol counts and rule counts.

    Runs wherever it is called (a Dask worker included): it opens the store itself.
    """
    backend = open_backend(settings, create=False)
    try:
        bars = backend.bars.read(list(symbols), Timeframe.parse(timeframe))
        actions = backend.actions.for_symbols(list(symbols))
    finally:
        backend.close()
    return _check(build_validator(settings), bars, actions)


def _check(
    validator: Validator, bars: pl.DataFrame, actions: pl.DataFrame
) -> tuple[pl.DataFrame, dict[str, int]]:
    if bars.is_empty():
        return pl.DataFrame(schema=_PER_SYMBOL), {}
    result = validator.validate(bars, job_id="revalidation", actions=actions)
    counts = bars.group_by("symbol").agg(bars=pl.len().cast(pl.Int64))
    # a row may break several rules: count rows once
    rejected = (
        result.rejected.unique(["symbol", "ts"])
        .group_by("symbol")
        .agg(rejected=pl.len().cast(pl.Int64))
    )
    flagged = (
        result.clean.filter(pl.col("quality_flags") != 0)
        .group_by("symbol")
        .agg(flagged=pl.len().cast(pl.Int64))
    )
    per_symbol = (
        counts.join(rejected, on="symbol", how="left")
        .join(flagged, on="symbol", how="left")
        .with_columns(pl.col("rejected", "flagged").fill_null(0).cast(pl.Int64))
        .select(list(_PER_SYMBOL))
        .sort("symbol")
    )
    return per_symbol, dict(result.report.rule_counts)


def revalidate(
    settings: Settings,
    timeframe: TimeframeLike = "1d",
    *,
    engine: Literal["local", "dask"] = "local",
    client: Any = None,
    progress: Progress | None = None,
) -> RevalidationReport:
    """Check every stored bar of `timeframe` with the current rules.

    `local`: one read and one validation in this process. `dask`: one task per lake bucket
    on `client`, or on a cluster from `settings.dask` (a LocalCluster on 127.0.0.1 unless a
    scheduler address is set), closed again afterwards.
    """
    tf = str(Timeframe.parse(timeframe))
    t0 = time.perf_counter()
    backend = open_backend(settings, create=False)
    try:
        symbols = backend.bars.symbols(Timeframe.parse(tf))
        if engine == "local":
            bars = backend.bars.read(symbols, Timeframe.parse(tf))
            actions = backend.actions.for_symbols(symbols)
    finally:
        backend.close()
    if engine == "local":
        per_symbol, counts = _check(build_validator(settings), bars, actions)
        if progress is not None:
            progress(1, 1)
        return RevalidationReport(tf, "local", 1, per_symbol, counts, time.perf_counter() - t0)
    groups = partitions(symbols, settings.storage.buckets)
    with dask_client(settings, client) as dask:
        futures = dask.map(check_partition, [settings] * len(groups), groups, [tf] * len(groups))
        follow(futures, progress)
        results = dask.gather(futures)
    frames = [frame for frame, _ in results if not frame.is_empty()]
    per_symbol = pl.concat(frames).sort("symbol") if frames else pl.DataFrame(schema=_PER_SYMBOL)
    totals: dict[str, int] = {}
    for _, part in results:
        for rule, n in part.items():
            totals[rule] = totals.get(rule, 0) + n
    return RevalidationReport(tf, "dask", len(groups), per_symbol, totals, time.perf_counter() - t0)
