"""Merging a write into a partition's rows by (symbol, ts): `_merge` (joins and a sort)
and `_merge_few` (a few rows placed by binary search), for `bars.ParquetLake`."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import polars as pl

from quantivista.model.schema import (
    BAR_COLUMNS,
    BAR_VALUE_COLUMNS,
)
from quantivista.storage.base import UpsertStats


def _merge(
    existing: pl.DataFrame, new: pl.DataFrame
) -> tuple[pl.DataFrame | None, UpsertStats, pl.DataFrame]:
    """Merge `new` into `existing` by (symbol, ts); unchanged rows keep their knowledge time.

    Also return the replaced versions of `existing`, stamped with `superseded_at`.
    """
    key = ["symbol", "ts"]
    old = existing.select(*key, *BAR_VALUE_COLUMNS, "ingested_at", "job_id").with_columns(
        _present=pl.lit(True)
    )
    joined = new.join(old, on=key, how="left", suffix="_old")
    present = pl.col("_present").fill_null(False)
    same = present & pl.all_horizontal(
        [pl.col(c).eq_missing(pl.col(f"{c}_old")) for c in BAR_VALUE_COLUMNS]
    )
    marked = joined.with_columns(_same=same, _present=present)
    counts = marked.select(
        inserted=(~pl.col("_present")).sum(),
        unchanged=pl.col("_same").sum(),
    ).row(0, named=True)
    stats = UpsertStats(
        inserted=int(counts["inserted"]),
        unchanged=int(counts["unchanged"]),
        updated=new.height - int(counts["inserted"]) - int(counts["unchanged"]),
    )
    if stats.written == 0:
        return None, stats, existing.clear()
    replaced = marked.filter(pl.col("_present") & ~pl.col("_same")).select(
        *key, superseded_at=pl.col("ingested_at").fill_null(datetime.now(UTC))
    )
    superseded = existing.join(replaced, on=key, how="inner")
    incoming = marked.with_columns(
        ingested_at=pl.when("_same").then("ingested_at_old").otherwise("ingested_at"),
        job_id=pl.when("_same").then("job_id_old").otherwise("job_id"),
    ).select(BAR_COLUMNS)
    kept = existing.join(new.select(key), on=key, how="anti")
    return pl.concat([kept, incoming]).sort(key), stats, superseded


def _merge_few(
    existing: pl.DataFrame,
    index: dict[str, tuple[int, int]],
    new: pl.DataFrame,
    runs: Sequence[tuple[str, int]],
    order: np.ndarray | None = None,
) -> tuple[pl.DataFrame | None, UpsertStats, pl.DataFrame, list[tuple[str, int]]]:
    """`_merge` of a few rows into a partition (a correction of an earlier bar), on the
    partition's order instead of joins and a sort of all of its rows: each new row's place
    is found by a binary search in its symbol's rows (`index`: where each symbol's rows
    of `existing` start, and how many), and the merged rows are one gather. `new` is sorted by
    symbol and ts without repeated keys, `runs` its (symbol, rows) in order. Also returns
    the merged rows' symbol runs.

    With `order`, `existing` is a partition's base and delta rows as stacked and `order`
    the row numbers that sort them (`PartitionView.stacked`): positions are in that order,
    and the merged rows are still one gather of the stacked ones."""
    names = list(index)  # in row order: sorted
    old_ts = existing["ts"].to_physical().to_numpy()
    if order is not None:
        old_ts = old_ts[order]

    def stacked(positions: np.ndarray) -> np.ndarray:  # sorted positions -> stacked rows
        return order[positions] if order is not None else positions

    new_ts = new["ts"].to_physical().to_numpy()
    at = np.empty(new.height, dtype=np.int64)  # each new row's place among the old rows
    found = np.zeros(new.height, dtype=bool)  # ... holding the same key
    added: dict[str, int] = {}
    start = 0
    for symbol, n in runs:  # a loop over the batch's symbols, not its rows
        ts = new_ts[start : start + n]
        span = index.get(symbol)
        fresh = n
        if span is None:  # a new symbol: before the first one after it
            i = bisect_left(names, symbol)
            at[start : start + n] = index[names[i]][0] if i < len(names) else existing.height
        else:
            first, rows = span
            places = np.searchsorted(old_ts[first : first + rows], ts)
            inside = places < rows
            hits = np.zeros(n, dtype=bool)
            hits[inside] = old_ts[first + places[inside]] == ts[inside]
            at[start : start + n] = first + places
            found[start : start + n] = hits
            fresh -= int(hits.sum())
        if fresh:
            added[symbol] = added.get(symbol, 0) + fresh
        start += n
    matched = np.flatnonzero(found)
    olds = existing[stacked(at[matched])]
    same = np.zeros(new.height, dtype=bool)
    if len(matched):
        same[matched] = _same_values(new[matched], olds)
    inserted = int(new.height - len(matched))
    unchanged = int(same.sum())
    stats = UpsertStats(
        inserted=inserted, unchanged=unchanged, updated=new.height - inserted - unchanged
    )
    if stats.written == 0:
        return None, stats, existing.clear(), []
    replaced = found & ~same
    gone = at[replaced]
    superseded = _superseded(existing[stacked(gone)], new[np.flatnonzero(replaced)])
    # an unchanged row stays as it is (its knowledge time too): the old row is kept
    incoming = np.flatnonzero(~same)
    keep = np.ones(existing.height, dtype=bool)
    keep[gone] = False
    kept = np.flatnonzero(keep)
    # a new row goes before the old row at its place (which it replaces, or follows)
    keys = np.concatenate([kept * 2 + 1, at[incoming] * 2])
    placed = np.argsort(keys, kind="stable")
    picked = np.concatenate([stacked(kept), existing.height + incoming])[placed]
    # one chunk: polars gathers from many chunks (a base and its deltas) ~4x slower
    merged = _joined_rows([existing, new.select(existing.columns)])[picked]
    counts = {name: n for name, (_, n) in index.items()}
    for symbol, n in added.items():
        counts[symbol] = counts.get(symbol, 0) + n
    return merged, stats, superseded, sorted(counts.items())


def _same_values(mine: pl.DataFrame, olds: pl.DataFrame) -> np.ndarray:
    """Say which rows of `mine` hold the values of the same row of `olds` (as `eq_missing`:
    nulls equal, NaNs equal). Python over a correction's few rows: each `eq_missing` of a
    Series is a query of its own (~0.2 ms), nine of them per correction."""
    names = list(BAR_VALUE_COLUMNS)
    pairs = zip(mine.select(names).rows(), olds.select(names).rows(), strict=True)
    return np.array(
        [all(a == b or (a != a and b != b) for a, b in zip(x, y, strict=True)) for x, y in pairs],
        dtype=bool,
    )


def _superseded(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Return the replaced versions `old` stamped with `superseded_at`: the knowledge time
    of the versions `new` that replace them (row by row; now where it is missing)."""
    stamps = new["ingested_at"]
    if stamps.null_count():
        stamps = stamps.fill_null(datetime.now(UTC))
    return old.hstack([stamps.alias("superseded_at")])


def _joined_rows(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Return `frames` one after another as one chunk (types relaxed only where a store
    written before holds other ones)."""
    if all(f.schema == frames[0].schema for f in frames[1:]):
        return pl.concat(frames, rechunk=True)
    return pl.concat(frames, how="vertical_relaxed", rechunk=True)
