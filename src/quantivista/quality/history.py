"""Stored bars before a batch, placed among the batch's series as numpy index arrays.

The series checks (spikes, stale runs) and the bad-print check of a small batch read the
last stored bars of each of its series. Building that as frames (a join, a filter, a
concat and a sort of history + batch, once per check) is ~30 small Polars steps, most of
a streaming micro-batch's validation. Here one join maps each stored bar to its batch
series; the rest is index arithmetic: which stored bars are kept, and where each stored
and each batch row sits in the merged (series, ts) order. The checks then gather numpy
columns by those positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from quantivista.model.flags import QualityFlag

__all__ = ["Merged", "merge_history"]

_PENDING = int(QualityFlag.SPIKE_PENDING)
_UTC_US = pl.Datetime("us", "UTC")
_KEYS = ("symbol", "timeframe", "ts")


@dataclass(frozen=True, slots=True)
class Merged:
    """Kept stored bars and batch rows in one (series, ts) order, as positions.

    `rows`: the history row of each kept stored bar, in (series, ts, arrival) order;
    `series`: its batch series; `neighbour`: among its series' last `tail` kept bars (all
    the bad-print check reads); `hist_at` / `batch_at`: the merged position of each kept
    stored bar / batch row; `new`: the merged rows that start a series.
    """

    rows: np.ndarray
    series: np.ndarray
    neighbour: np.ndarray
    hist_at: np.ndarray
    batch_at: np.ndarray
    new: np.ndarray
    keys_sorted: bool = True  # the batch's series are in (symbol, timeframe) order

    @property
    def size(self) -> int:
        return self.new.size

    def take(self, hist: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """One merged column from the kept stored bars' values and the batch's values."""
        if not self.rows.size:  # no stored bars: the batch's own column, not a copy
            return batch
        out = np.empty(self.size, dtype=np.result_type(hist, batch))
        out[self.hist_at] = hist
        out[self.batch_at] = batch
        return out


def merge_history(
    history: pl.DataFrame | None,
    batch: pl.DataFrame,
    rows: int,
    tail: int,
    one_timeframe: bool = False,
) -> Merged | None:
    """Place the stored bars the batch's results depend on among the batch's rows.

    `batch` is sorted by (symbol, timeframe, ts) with `_new` series marks. Kept per
    series: the last `rows` stored bars before its first batch bar, and `rows` before its
    oldest pending spike (the batch decides it); `neighbour` marks the last `tail`
    (<= `rows`). Returns None when a key or ts is null or ts is not UTC microseconds
    (the caller's frame path handles those).
    """
    if batch["ts"].dtype != _UTC_US or any(batch[c].null_count() for c in _KEYS):
        return None
    new = batch["_new"].to_numpy()
    n = new.size
    series_of = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    empty = np.zeros(0, dtype=np.int64)
    if history is None or history.is_empty() or not n:
        return Merged(empty, empty, empty.astype(bool), empty, np.arange(n), new.copy())
    if history["ts"].dtype != _UTC_US:
        return None
    # the first (least) ts of each series: the batch is sorted
    firsts = batch[list(_KEYS)][starts].with_row_index("_g")
    first = pl.col("ts") < pl.col("_first")
    on = ["symbol", "timeframe"]
    if (
        one_timeframe or firsts["timeframe"].n_unique() == 1
    ):  # one timeframe: the symbol's hash alone
        first = first & (pl.col("timeframe") == firsts["timeframe"][0])
        keys_sorted = firsts["symbol"].is_sorted()
        firsts, on = firsts.drop("timeframe"), ["symbol"]
    else:
        keys = firsts.select("symbol", "timeframe")
        keys_sorted = keys.equals(keys.sort("symbol", "timeframe"))
    # the filter after the collect: in the query it becomes a join predicate, several
    # times slower
    found = (
        history.lazy()
        .select("symbol", "timeframe", "ts", pl.col("quality_flags").fill_null(0))
        .with_row_index("_r")
        .join(firsts.lazy().rename({"ts": "_first"}), on=on, how="inner", maintain_order="left")
        .collect(engine="in-memory")  # the streaming engine: twice the instructions here
        .filter(first)
    )
    keep = found["_r"].to_numpy().astype(np.int64)
    kg = found["_g"].to_numpy().astype(np.int64)
    kts = found["ts"].to_numpy().view(np.int64)
    flags = found["quality_flags"].to_numpy()
    if kts.size < 2 or bool(np.all(kts[1:] >= kts[:-1])):  # arrival in ts order: group only
        order = np.argsort(kg.astype(np.uint16) if starts.size < 65536 else kg, kind="stable")
    else:
        order = np.lexsort((keep, kts, kg))
    r, kg, flags = keep[order], kg[order], flags[order]
    m = r.size
    neighbour = np.ones(m, dtype=bool)
    if m:
        hnew = np.ones(m, dtype=bool)
        hnew[1:] = kg[1:] != kg[:-1]
        hstarts = np.flatnonzero(hnew)
        sizes = np.diff(np.append(hstarts, m))
        at = np.arange(m)
        pending = (flags & _PENDING) != 0
        oldest = np.minimum.reduceat(np.where(pending, at, m), hstarts)
        # rows after the cut: the last `rows` of the series and `rows` before a pending spike
        cut = np.minimum(hstarts + sizes - rows, oldest - rows)
        kept = at >= np.repeat(cut, sizes)
        neighbour = (at >= np.repeat(hstarts + sizes - tail, sizes))[kept]
        r, kg = r[kept], kg[kept]
    # both parts are in series order: a merge by counting, stored bars first in a series
    hist_at = np.arange(r.size) + np.searchsorted(series_of, kg, side="left")
    batch_at = np.arange(n) + np.searchsorted(kg, series_of, side="right")
    merged_new = np.zeros(r.size + n, dtype=bool)
    hist_first = np.ones(r.size, dtype=bool)
    hist_first[1:] = kg[1:] != kg[:-1]
    merged_new[hist_at[hist_first]] = True
    has_hist = np.zeros(starts.size, dtype=bool)
    has_hist[kg] = True
    merged_new[batch_at[new & ~has_hist[series_of]]] = True
    return Merged(r, kg, neighbour, hist_at, batch_at, merged_new, keys_sorted)
