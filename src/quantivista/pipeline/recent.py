"""The recent stored bars of series one writer keeps appending to: validation history
without a store read per batch.

A live stream (and a micro-batch writer) stores a small batch of new bars every second or
so; each batch's validation needs the stored bars just before it (`stages.history_for`).
Those are bars the writer stored itself, so `RecentHistory` keeps them: seeded from the
store once per series (at its first batch, or earlier with `seed`), extended by every
store (`add`: what the write stored, amended bars replacing the versions they amend), and
bounded to the span `history_for` would read, plus how far back a batch may reach behind
the newest kept bar (`reach`: a stream's amendments of earlier minutes).

It answers for a batch only where it knows it holds everything the store would return:
from the bars a series was seeded with on, minus what the bound dropped. A batch that
reaches back before that (a late or back-filled batch older than the window) is answered
by a store read, as without the cache. It assumes no other writer stores these series
(bars written elsewhere are not seen): a writer that also stores them another way calls
`forget`, and a restarted process starts empty, so it reseeds from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from quantivista.model.schema import BAR_COLUMNS
from quantivista.model.timeframe import Timeframe
from quantivista.pipeline.messages import StoredBatch
from quantivista.pipeline.stages import history_for, history_lookback, one_timeframe
from quantivista.quality.history import micros
from quantivista.quality.validate import Validator
from quantivista.storage.base import BarStore

__all__ = ["RecentHistory"]


class RecentHistory:
    """The bars of one timeframe a writer stored over the last `lookback + reach`, as stored
    (clean rows and decided spikes): the validation history of its next batches.

    `lookback` is the span `history_for` reads before a batch (from the validator's
    settings); a batch starting up to `reach` before the newest kept bar is answered too."""

    def __init__(
        self,
        store: BarStore,
        validator: Validator,
        timeframe: str = "1m",
        reach: timedelta = timedelta(0),
    ) -> None:
        self.store = store
        self.validator = validator
        self.timeframe = Timeframe.parse(timeframe)
        self.lookback = history_lookback(self.timeframe, validator)
        self.span = self.lookback + reach  # kept behind the newest bar
        self.frame: pl.DataFrame | None = None
        # per series: the oldest ts from which the kept bars are all the store holds
        self.covered: dict[str, datetime] = {}
        self._floor: datetime | None = None  # what the bound dropped lies before this
        self.reads = 0  # store reads (seeds and fallbacks), for tests and metrics

    def history(self, bars: pl.DataFrame) -> pl.DataFrame | None:
        """Return the stored bars before `bars` the validation needs (the kept bars; the
        validator takes those before each series' first), or a store read when the batch
        reaches back before what is kept or is not of this timeframe."""
        tf = one_timeframe(bars)
        if tf is None or Timeframe.parse(tf) != self.timeframe:
            return history_for(bars, self.store, self.validator)
        first = bars["ts"].min()
        assert isinstance(first, datetime)
        names = bars["symbol"].unique().to_list()  # one entry per series
        new = [s for s in names if s not in self.covered]
        if new:
            self.seed(new, first)
        need = first - self.lookback
        floor = self._floor
        if (floor is not None and need < floor) or any(self.covered[s] > need for s in names):
            self.reads += 1  # older than the window: what the store holds
            return history_for(bars, self.store, self.validator)
        return self.frame

    def seed(self, symbols: Sequence[str], at: datetime) -> None:
        """Read the stored bars of series not kept yet around `at` (their first batch's
        time): the lookback before it and a lookback after (bars a restarted writer
        stored before it stopped)."""
        new = sorted({s for s in symbols if s not in self.covered})
        if not new:
            return
        self.reads += 1
        start = at - self.lookback
        stored = self.store.recent(new, self.timeframe, start, at + self.lookback)
        for symbol in new:
            self.covered[symbol] = start
        if stored.height:
            self._keep([stored])
            # the store answers by symbol; the validator's history lookup is fastest in ts
            # order (releases append in it), so a seed puts the kept bars back in that order
            assert self.frame is not None
            self.frame = self.frame.sort("ts", maintain_order=True)

    def add(self, stored: StoredBatch) -> None:
        """Keep what a write stored (of this timeframe): new bars, amended ones."""
        rows = [stored.clean]
        if stored.decided is not None and stored.decided.height:
            rows.append(stored.decided)
        mine = str(self.timeframe)
        kept = []
        for part in rows:  # the clean rows and the decided ones: two at most
            tf = one_timeframe(part)
            if tf == mine:
                kept.append(part)
            elif tf is None and part.height:  # several timeframes: this one's rows
                kept.append(part.filter(pl.col("timeframe") == mine))
        self._keep(kept)

    def forget(self, symbols: Sequence[str] | None = None) -> None:
        """Drop what is kept (of some series, or all): they are read from the store again."""
        if symbols is None:
            self.frame, self.covered, self._floor = None, {}, None
            return
        for symbol in symbols:
            self.covered.pop(symbol, None)
        if self.frame is not None:
            self.frame = self.frame.filter(~pl.col("symbol").is_in(list(symbols)))

    def _keep(self, rows: list[pl.DataFrame]) -> None:
        parts = [r.select(BAR_COLUMNS) for r in rows if r.height]
        if not parts:
            return
        first = min(p["ts"].min() for p in parts)  # type: ignore[type-var]
        kept = self.frame
        if kept is not None and kept.height:
            parts.insert(0, kept)
        frame = pl.concat(parts, how="vertical_relaxed")
        # new minutes after every kept one (the usual release) replace nothing; otherwise
        # the newest version of a bar wins (a correction amends what was kept)
        if len(parts) > 2 or kept is None or not kept.height or not first > kept["ts"].max():  # type: ignore[operator]
            amended = _amended(kept, frame) if kept is not None and kept.height else None
            if amended is not None:  # every amended bar is kept: replaced in place
                frame = amended
            else:
                frame = frame.unique(
                    ["symbol", "timeframe", "ts"], keep="last", maintain_order=True
                )
            # an amended bar now sits at the end: back in ts order (the validator's history
            # lookup is fastest in it, as after a seed)
            if not frame["ts"].is_sorted():
                frame = frame.sort("ts", maintain_order=True)
        newest, oldest = frame["ts"].max(), frame["ts"].min()
        assert isinstance(newest, datetime) and isinstance(oldest, datetime)
        bound = newest - self.span
        if oldest < bound:
            frame = _since(frame, bound)
            self._floor = bound if self._floor is None else max(self._floor, bound)
        self.frame = frame


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _amended(kept: pl.DataFrame, whole: pl.DataFrame) -> pl.DataFrame | None:
    """Return `whole` (the kept rows, then the new ones) with each new row at or before the
    newest kept bar put in place of the kept version of its bar, and the rest after them:
    one gather, where `unique` and a sort of every kept row held polars' thread pool for
    ~8 ms (a stream's re-flag of its previous bar, ~1 release in 100). None when a new row
    before the newest kept bar has no kept version (a late bar: the caller dedupes), or
    the kept rows are not in ts order."""
    n = kept.height
    ts = micros(whole["ts"])
    kept_ts, new_ts = ts[:n], ts[n:]
    newest = kept_ts[-1]
    if not (kept_ts[:-1] <= kept_ts[1:]).all():
        return None
    late = np.flatnonzero(new_ts <= newest)
    fresh = whole.slice(n).select("symbol", "ts")
    if fresh.height > len(late) and fresh.is_duplicated().any():  # one bar twice: dedupe
        return None
    if not len(late):
        return whole
    symbols = whole["symbol"]
    order = np.arange(whole.height)
    for j in late.tolist():  # a few rows: a correction's
        lo, hi = (
            np.searchsorted(kept_ts, new_ts[j], "left"),
            np.searchsorted(kept_ts, new_ts[j], "right"),
        )
        names = symbols.slice(int(lo), int(hi - lo)).to_list()
        symbol = symbols[n + j]
        if symbol not in names:
            return None
        order[lo + names.index(symbol)] = n + j  # a later version of the bar wins
        order[n + j] = -1
    return whole[order[order >= 0]]


def _since(frame: pl.DataFrame, bound: datetime) -> pl.DataFrame:
    """The rows of `frame` (canonical) at or after `bound`, in order: a slice when they are
    its last rows (the kept bars in ts order, the usual case), else a filter. On numpy:
    the comparison with a datetime literal cost more than the rows (a stream's every add)."""
    keep = micros(frame["ts"]) >= (bound - _EPOCH) // _MICROSECOND
    first = int(np.argmax(keep))
    if keep[first:].all():
        return frame.slice(first) if keep[first] else frame.clear()
    return frame.filter(pl.Series(keep))
