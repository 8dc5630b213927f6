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

import threading
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from quantivista.model.flags import QualityFlag

__all__ = ["Merged", "marked", "merge_history", "micros"]

_PENDING = int(QualityFlag.SPIKE_PENDING)
# stored bars looked up first, per series kept: room for series that skip a few minutes
_SLACK = 1.25
_KEYS = ("symbol", "timeframe", "ts")


@dataclass(frozen=True, slots=True)
class Merged:
    """Kept stored bars and batch rows in one (series, ts) order, as positions.

    `rows`: the history row of each kept stored bar, in (series, ts, arrival) order;
    `series`: its batch series; `neighbour`: among its series' last `tail` kept bars (all
    the bad-print check reads); `hist_at` / `batch_at`: the merged position of each kept
    stored bar / batch row; `new`: the merged rows that start a series; `source`: the
    row of each merged row in the history's rows (from the first kept one) followed by
    the batch's; `decides`: a
    kept stored bar's spike is pending.
    """

    rows: np.ndarray
    series: np.ndarray
    neighbour: np.ndarray
    hist_at: np.ndarray
    batch_at: np.ndarray
    new: np.ndarray
    keys_sorted: bool = True  # the batch's series are in (symbol, timeframe) order
    source: np.ndarray | None = None
    decides: bool = False  # a kept stored bar has a pending spike (the batch decides it)
    offset: int = 0  # the first kept stored bar's history row

    @property
    def size(self) -> int:
        return self.new.size

    def take(self, stored: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """One merged column from a whole history column and the batch's column (one
        gather; without stored bars the batch's own column, not a copy)."""
        if self.source is None:
            return batch
        # the history from its first kept row on: the rows before it are never read
        out: np.ndarray = np.concatenate([stored[self.offset :], batch])[self.source]
        return out

    def series_of_rows(self) -> np.ndarray:
        """The batch series of each merged row (every series starts once, in order)."""
        out: np.ndarray = np.cumsum(self.new) - 1
        return out


def merge_history(
    history: pl.DataFrame | None,
    batch: pl.DataFrame,
    rows: int,
    tail: int,
    one_timeframe: bool = False,
) -> Merged:
    """Place the stored bars the batch's results depend on among the batch's rows.

    `batch` is sorted by (symbol, timeframe, ts) with `_new` series marks. Kept per
    series: the last `rows` stored bars before its first batch bar, and `rows` before its
    oldest pending spike (the batch decides it); `neighbour` marks the last `tail`
    (<= `rows`). Keys must be canonical (non-null; ts in UTC microseconds), as the
    validator makes them.

    History in ts order (the stream keeps it so) is looked up from its end: the last
    rows x series x `_SLACK` stored bars hold every series' kept bars unless a series trades
    less often or an old spike is still pending; then, and for history in any other
    order, every stored bar is looked up.
    """
    new = batch["_new"].to_numpy()
    n = new.size
    starts = np.flatnonzero(new)
    if history is None or history.is_empty() or not n:
        empty = np.zeros(0, dtype=np.intp)
        return Merged(empty, empty, empty.astype(bool), empty, np.arange(n), new.copy())
    symbols, timeframes = marked(batch["symbol"], new), marked(batch["timeframe"], new)
    if one_timeframe:
        keys_sorted = symbols.is_sorted()
    else:
        keys = pl.DataFrame([symbols, timeframes]).with_row_index("_g")
        keys_sorted = keys.sort("symbol", "timeframe", maintain_order=True)["_g"].is_sorted()
    first = micros(batch["ts"])[starts]  # each series' least ts: the batch is sorted
    us = micros(history["ts"])
    flags = history["quality_flags"]
    bits = (flags.fill_null(0) if flags.null_count() else flags).to_numpy()
    m = us.size
    in_order = history["ts"].is_sorted()  # a sorted frame knows it without a scan
    pending_at = np.flatnonzero(bits & _PENDING)  # few: most stored bars are decided
    begin = max(0, m - int(rows * starts.size * _SLACK)) if in_order else 0
    if begin and pending_at.size and pending_at[0] < begin:
        begin = 0  # an old pending spike may be one of the batch's series'
    while True:
        sorted_us = us[begin:] if in_order else None
        r, g = _stored(history, begin, symbols, timeframes, one_timeframe, sorted_us)
        r, g = _by_series(r, g, us, first, in_order)
        sizes = np.bincount(g, minlength=starts.size)
        at = np.arange(r.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # in its series
        pending = np.zeros(0, dtype=np.intp)
        if pending_at.size:  # rare: most stored bars are decided
            pending = np.flatnonzero((bits[r] & _PENDING) != 0)
        oldest = sizes.copy()  # a series' oldest pending bar (its size: none)
        if pending.size:  # the first of each series' pending bars (they are in order)
            pg = g[pending]
            firsts = pending[np.append(True, pg[1:] != pg[:-1])]
            oldest[g[firsts]] = at[firsts]
        # rows from the cut: the last `rows` of the series and `rows` before a pending spike
        cut = np.minimum(sizes, oldest) - rows
        if not begin or (cut >= 0).all():
            break
        begin = 0  # a series' cut lies before the rows looked up: look up all
    kept = at >= np.repeat(cut, sizes)  # (r and g are in series order: repeats, not gathers)
    neighbour = (at >= np.repeat(sizes - tail, sizes))[kept]
    decides = bool((at[pending] >= cut[g[pending]]).any())  # a kept bar's spike is pending
    r, g = r[kept], g[kept]
    counts = sizes - np.maximum(cut, 0)  # kept stored bars per series
    # both parts are in series order: a merge by counting, stored bars first in a series
    series_of = np.cumsum(new) - 1
    hist_at = np.arange(r.size) + np.repeat(starts, counts)
    batch_at = np.arange(n) + np.cumsum(counts)[series_of]
    merged_new = np.zeros(r.size + n, dtype=bool)
    with_stored = counts > 0
    merged_new[hist_at[(np.cumsum(counts) - counts)[with_stored]]] = True
    merged_new[batch_at[new & ~with_stored[series_of]]] = True
    source, offset = None, int(r.min()) if r.size else 0
    if r.size:  # rows of the history from its first kept row on, then of the batch
        source = np.empty(r.size + n, dtype=np.intp)
        source[hist_at] = r - offset
        source[batch_at] = np.arange(m - offset, m - offset + n)
    return Merged(
        r, g, neighbour, hist_at, batch_at, merged_new, keys_sorted, source, decides, offset
    )


def micros(ts: pl.Series) -> np.ndarray:
    """The int64 microseconds of a canonical (null-free, UTC us) ts column."""
    out: np.ndarray = ts.to_numpy().view(np.int64)
    return out


def _stored(
    history: pl.DataFrame,
    begin: int,
    symbols: pl.Series,
    timeframes: pl.Series,
    one_timeframe: bool,
    sorted_us: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The history rows from `begin` on that belong to one of the batch's series (series
    `i` is (`symbols[i]`, `timeframes[i]`)), in history order, with their series.

    Keys become positions among the batch's distinct symbols (a cast to an enum of them:
    a hash lookup per row, no join); with several timeframes a (symbol, timeframe) table
    of positions gives the series. `sorted_us`: the rows' ts when in order (their symbol
    codes may then be the last call's, see `_symbol_codes`).
    """
    part = history.slice(begin) if begin else history
    count = symbols.len()
    if one_timeframe:  # the series' symbols are distinct: a symbol's position is its series
        other = part["timeframe"] != timeframes[0]
        series = _symbol_codes(part["symbol"], symbols, sorted_us)
        found = series < count
        if other.any():  # stored bars of other timeframes too
            found &= ~other.to_numpy()
        return np.flatnonzero(found) + begin, series[found]
    names, kinds = symbols.unique(maintain_order=True), timeframes.unique(maintain_order=True)
    table = np.full((names.len() + 1, kinds.len() + 1), count, dtype=np.intp)
    table[_codes(symbols, names), _codes(timeframes, kinds)] = np.arange(count)
    series = table[
        _symbol_codes(part["symbol"], names, sorted_us), _codes(part["timeframe"], kinds)
    ]
    r = np.flatnonzero(series < count)
    return r + begin, series[r].astype(np.intp)


def marked(column: pl.Series, marks: np.ndarray) -> pl.Series:
    """The values of `column` on the rows `marks` is true; the column itself when it is
    true on every row (taking strings is not free)."""
    return column if marks.all() else column.filter(pl.Series(marks))


def _codes(values: pl.Series, categories: pl.Series) -> np.ndarray:
    """Each value's position among the distinct `categories` (their count where absent)."""
    if values.len() == categories.len() and values.equals(categories):
        # the categories themselves (a stream's last batch, appended to its history)
        return np.arange(values.len(), dtype=np.uint32)
    # the Arrow dictionary's indices are the Enum's codes: ~1/8 the cost of `to_physical`,
    # and filling its nulls ~1/8 of a Polars `fill_null` (~0.2 ms on a micro-batch)
    coded = values.cast(pl.Enum(categories), strict=False).to_arrow()
    indices = coded.indices
    if coded.null_count:
        indices = indices.cast(pa.int64()).fill_null(categories.len())
    out: np.ndarray = indices.to_numpy()
    return out


@dataclass(frozen=True, slots=True)
class _Coded:
    """The symbol codes of a history looked up, with what they were made from."""

    categories: pl.Series
    values: pl.Series
    newest: int  # the last row's ts (us)
    codes: np.ndarray


class _RecentCodes:
    """The symbol codes of the last few histories looked up, one per symbol set (LRU).

    Streams whose batches interleave (two feeds, two timeframes) each keep their entry: a
    single entry was replaced by the other stream's at every batch and never reused.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: list[_Coded] = []  # least recently used first
        self.hits = 0  # lookups that reused an entry's codes (tests read it)
        self._lock = threading.Lock()

    def find(self, categories: pl.Series) -> _Coded | None:
        """Return the entry made with these categories (now the most recent), if any."""
        with self._lock:
            for i, entry in enumerate(self.entries):
                if entry.categories.len() == categories.len() and entry.categories.equals(
                    categories
                ):
                    self.entries.append(self.entries.pop(i))
                    return entry
        return None

    def put(self, entry: _Coded, replaces: _Coded | None) -> None:
        """Remember `entry` (in place of `replaces`, the entry of the same categories),
        dropping the least recently used beyond `size`."""
        with self._lock:
            kept = [e for e in self.entries if e is not replaces]  # by identity: Series
            self.entries = [*kept, entry]
            del self.entries[: -self.size]


_RECENT = _RecentCodes(8)


def _symbol_codes(
    values: pl.Series, categories: pl.Series, sorted_us: np.ndarray | None
) -> np.ndarray:
    """`_codes` of a history's symbols, reusing an earlier call's for the rows they share.

    A stream's history is the last batch's history, less its oldest bars, with the last
    batch appended, in ts order: its rows up to the last history's newest ts are that
    history's last rows. The strings prove it (a comparison costs ~1/7 of the hash lookup
    of a cast); any other history is cast whole. Exact: a code depends on the string and
    the categories only. The last history of each of a few symbol sets is kept (`_RECENT`).
    """
    if sorted_us is None or not sorted_us.size:
        return _codes(values, categories)
    last = _RECENT.find(categories)
    codes: np.ndarray | None = None
    if last is not None:
        shared = int(np.searchsorted(sorted_us, last.newest, side="right"))
        size = last.values.len()
        if 0 < shared <= size and values.slice(0, shared).equals(last.values.slice(size - shared)):
            rest = _codes(values.slice(shared), categories)
            codes = np.concatenate([last.codes[size - shared :], rest])
            _RECENT.hits += 1
    if codes is None:
        codes = _codes(values, categories)
    _RECENT.put(_Coded(categories, values, int(sorted_us[-1]), codes), last)
    return codes


def _by_series(
    r: np.ndarray, g: np.ndarray, us: np.ndarray, first: np.ndarray, in_order: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The stored bars before their series' first batch bar, in (series, ts, arrival)
    order."""
    # history in ts order that ends before every series' first bar (the stream's): all kept
    if not (in_order and (not r.size or us[r[-1]] < first.min())):
        before = us[r] < first[g]
        r, g = r[before], g[before]
    if in_order:  # arrival in ts order: group only
        small = g.astype(np.uint16, copy=False) if first.size < 65536 else g  # a radix sort
        order = np.argsort(small, kind="stable")
    else:
        order = np.lexsort((r, us[r], g))
    return r[order], g[order]
