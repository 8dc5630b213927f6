"""The append path's arithmetic: a small write split into partitions, and watermarks.

A small write (a streaming micro-batch: one bar of each of 500 symbols, spread over all 64
buckets) is appended as one delta file when every row comes after its symbol's last stored
bar (see `deltas`). Two things decide its cost, and both are done here on arrays, not per
partition or per row:

- `Split`: the batch ordered by partition, symbol and ts with one gather, its runs (one a
  symbol and partition) as numpy arrays, and each partition's range of runs;
- `Marks`: a partition's last stored ts per symbol (its base's tail and the live deltas
  after it), kept by the writing process between writes. Valid while the base file keeps
  its identity: a rewrite of the base (a correction, a delete, retention, a fold) makes it
  rebuilt from the tail, and the deltas another process appended since are applied on top
  (names after `seen`). Merges and folds move rows without changing any last bar, and a
  last bar only moves forward otherwise (a delete rewrites the base), so the newest of
  the known and the applied values is right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
import polars as pl

from quantivista.storage.lake.encoding import _ranges

__all__ = ["NO_BAR", "Marks", "Split", "month_text"]

NO_BAR = np.iinfo(np.int64).min  # the last ts of a symbol a partition does not hold


def month_text(months: int) -> str:
    """Return "YYYY-MM" of a count of months since 1970-01."""
    return f"{1970 + months // 12:04d}-{months % 12 + 1:02d}"


@dataclass(slots=True)
class Split:
    """A batch of one timeframe in file order: partitions, symbols, ts."""

    frame: pl.DataFrame  # the rows, sorted by partition, symbol and ts
    symbols: list[str]  # each run's symbol
    counts: np.ndarray  # each run's rows
    offsets: np.ndarray  # each run's first row in `frame`
    firsts: np.ndarray  # each run's first ts (epoch microseconds)
    lasts: np.ndarray  # and last
    keys: list[tuple[int, int | None]]  # each partition's bucket and month (months since 1970)
    bounds: np.ndarray  # partition i holds runs bounds[i]:bounds[i + 1]

    @classmethod
    def of(
        cls, keyed: pl.DataFrame, monthly: bool, buckets: Callable[[list[str]], np.ndarray]
    ) -> Split:
        """Split `keyed` (each symbol one block of rising ts: `latest_per_key`);
        `buckets(symbols)` returns their buckets."""
        n = keyed.height
        stamps = keyed["ts"]  # a datetime64 array's int64 view: a 30th of `to_physical`
        if stamps.null_count():
            ts = stamps.to_physical().to_numpy()
        else:
            ts = stamps.to_numpy().view(np.int64)
        new = np.ones(n, dtype=bool)  # a run starts at each change of symbol
        if n > 1:  # Series ops: a lazy select costs ~50 us
            sym = keyed["symbol"]
            changed = sym.slice(1) != sym.slice(0, n - 1)
            if changed.null_count():  # a null symbol starts a run (as `!=` then True did)
                changed = changed.fill_null(True)
            new[1:] = changed.to_numpy()
        if monthly:
            months = ts.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
            new[1:] |= months[1:] != months[:-1]
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)
        symbols: list[str] = keyed["symbol"][starts].to_list()  # half `gather`'s cost
        run_months = months[starts] if monthly else np.zeros(len(starts), np.int64)
        key = buckets(symbols) * 1_000_000 + run_months
        order = np.lexsort((np.array(symbols), key))
        starts, ends, key = starts[order], ends[order], key[order]
        if np.array_equal(order, np.arange(len(order))):
            frame = keyed  # already in file order (one partition, or sorted already)
        else:
            frame = keyed[_ranges(starts, ends)]
        cuts = np.flatnonzero(np.diff(key)) + 1
        bounds = np.concatenate([[0], cuts, [len(key)]])
        heads = key[bounds[:-1]]
        keys = [(int(k // 1_000_000), int(k % 1_000_000) if monthly else None) for k in heads]
        counts = ends - starts
        return cls(
            frame=frame,
            symbols=[symbols[i] for i in order],
            counts=counts,
            offsets=np.concatenate([[0], np.cumsum(counts)[:-1]]),
            firsts=ts[starts],
            lasts=ts[ends - 1],
            keys=keys,
            bounds=bounds,
        )

    def part_rows(self) -> list[tuple[int, int]]:
        """Return each partition's first row in `frame` and its rows."""
        heads = self.bounds[:-1]
        rows = np.add.reduceat(self.counts, heads).tolist()
        return list(zip(self.offsets[heads].tolist(), rows, strict=True))

    def spans(self) -> list[tuple[int, int]]:
        """Return each partition's first and last ts (epoch microseconds)."""
        heads = self.bounds[:-1]
        lo = np.minimum.reduceat(self.firsts, heads).tolist()
        return list(zip(lo, np.maximum.reduceat(self.lasts, heads).tolist(), strict=True))

    def runs(self, i: int) -> list[tuple[str, int]]:
        """Return partition i's (symbol, rows) in row order."""
        lo, hi = int(self.bounds[i]), int(self.bounds[i + 1])
        return list(zip(self.symbols[lo:hi], self.counts[lo:hi].tolist(), strict=True))

    def appends(self, known: Sequence[dict[str, int] | None]) -> np.ndarray:
        """Say per partition whether each of its runs starts after its symbol's last
        stored bar (`known[i]`: partition i's last ts per symbol; None: no base file)."""
        after = self.firsts > self.stored_lasts(known)
        ok: np.ndarray = np.logical_and.reduceat(after, self.bounds[:-1]) & _has_base(known)
        return ok

    def stored_lasts(self, known: Sequence[dict[str, int] | None]) -> np.ndarray:
        """Return each run's symbol's last stored ts in its partition (`NO_BAR`: none)."""
        bounds, symbols, none = self.bounds.tolist(), self.symbols, repeat(NO_BAR)
        # every run's lookup in one C loop (`map`), not a Python call per symbol
        found = chain.from_iterable(
            map((marks or {}).get, symbols[lo:hi], none)
            for marks, lo, hi in zip(known, bounds, bounds[1:], strict=False)
        )
        return np.fromiter(found, np.int64, len(symbols))

    def replacing(self, known: Sequence[dict[str, int] | None]) -> tuple[np.ndarray, np.ndarray]:
        """Say per partition whether its runs start at or after their symbols' last stored
        bars with at least one at it (a correction of the latest bar, and appends), and per
        run whether it starts at it."""
        lasts = self.stored_lasts(known)
        heads = self.bounds[:-1]
        at = self.firsts == lasts
        ok = np.logical_and.reduceat(self.firsts >= lasts, heads) & _has_base(known)
        return ok & np.logical_or.reduceat(at, heads), at


def _has_base(known: Sequence[dict[str, int] | None]) -> np.ndarray:
    return np.array([marks is not None for marks in known], dtype=bool)


@dataclass(slots=True)
class Marks:
    """A partition's last ts per symbol as the writing process knows it (see the module)."""

    identity: tuple[int, int, int]  # the base file's identity when built
    seen: str  # the newest delta applied (or the base's `through`)
    lasts: dict[str, int]

    def apply(self, name: str, lasts: dict[str, int]) -> None:
        """Take in the last ts per symbol of a delta `name` of the partition."""
        mine = self.lasts
        for symbol, last in lasts.items():
            if last > mine.get(symbol, NO_BAR):
                mine[symbol] = last
        self.seen = max(self.seen, name)

    def advance(self, name: str, symbols: Sequence[str], lasts: Sequence[int]) -> None:
        """Take in this process's own append `name` (every run after the known lasts)."""
        self.lasts.update(zip(symbols, lasts, strict=True))
        self.seen = name
