"""Adjusted, rename-stitched reads of stored bars, with a small in-process cache.

The query service reads through here. The cache holds recent adjusted views; it is keyed by
the request, the action store's version and the store's data epoch (which any write, in any
process, replaces), and cleared whenever this process publishes `bars.ingested` or
`actions.ingested`, so new bars or actions never serve a stale view.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import date, datetime
from typing import Any

import polars as pl

from quantivista.actions.adjust import Adjust, DividendConvention, adjust_bars, check_adjust_args
from quantivista.actions.history import Segment, relabel, ticker_segments
from quantivista.model.schema import BAR_COLUMNS
from quantivista.model.timeframe import Timeframe
from quantivista.storage.base import BarStore
from quantivista.storage.contracts import ActionStore
from quantivista.timeutil import DateLike, to_date

__all__ = ["AdjustedReader"]

_NEEDED = ("symbol", "ts", "close")


class AdjustedReader:
    """Read bars raw or adjusted, following ticker renames, caching adjusted views."""

    def __init__(
        self,
        store: BarStore,
        actions: ActionStore,
        cache_size: int = 32,
        epoch: Callable[[], Hashable] | None = None,
    ) -> None:
        self.store = store
        self.action_store = actions
        self.cache_size = cache_size
        # the store's data epoch: changes with any write, in any process (see pipeline.stages)
        self.epoch = epoch or (lambda: None)
        self._cache: OrderedDict[tuple[Any, ...], pl.DataFrame] = OrderedDict()
        # (file version, all actions, the renames among them, every ticker a rename touches)
        self._actions: tuple[Hashable, pl.DataFrame, pl.DataFrame, frozenset[str]] | None
        self._actions = None
        self._lock = threading.Lock()

    def invalidate(self, *_: object) -> None:
        """Drop every cached view (called on new bars or new actions)."""
        with self._lock:
            self._cache.clear()
            self._actions = None

    def _action_version(self) -> Hashable:
        return self.action_store.version()

    def actions(self) -> pl.DataFrame:
        """Return all stored actions (re-read only when the file changed)."""
        return self._loaded()[1]

    def _loaded(self) -> tuple[Hashable, pl.DataFrame, pl.DataFrame, frozenset[str]]:
        version = self._action_version()
        with self._lock:
            if self._actions is not None and self._actions[0] == version:
                return self._actions
        frame = self.action_store.all()
        renames = frame.filter(pl.col("action_type") == "symbol_change")
        touched = frozenset(renames["new_symbol"].to_list()) | frozenset(
            renames["symbol"].to_list()
        )
        loaded = (version, frame, renames, touched)
        with self._lock:
            self._actions = loaded
        return loaded

    def read(
        self,
        symbols: list[str],
        timeframe: Timeframe,
        start: datetime | None,
        end: datetime | None,
        columns: Sequence[str] | None,
        *,
        adjust: Adjust = "none",
        dividend_convention: DividendConvention = "crsp",
        effective_on: DateLike | None = None,
        follow_renames: bool = True,
        known_at: datetime | None = None,
    ) -> pl.DataFrame:
        """Return bars of `symbols` with `start <= ts < end`, adjusted as asked.

        Two points in time, named apart: `effective_on` (a day) picks the actions (ex-dates
        up to that day) and what a ticker meant then; `known_at` (an instant) is the
        knowledge time of the bars themselves (`BarStore.read(as_of=...)`).
        """
        check_adjust_args(adjust, dividend_convention)
        day = to_date(effective_on) if effective_on is not None else None
        # a ticker means the instrument using it today, or on `effective_on` for a past view
        _, actions, renames, renamed = self._loaded()
        segments = {
            s: ticker_segments(s, renames, day) if follow_renames and s in renamed else []
            for s in symbols
        }
        plain = all(len(seg) <= 1 and _unbounded(seg) for seg in segments.values())
        if adjust == "none" and plain:
            return self.store.read(symbols, timeframe, start, end, columns, as_of=known_at)
        key = (
            tuple(symbols), str(timeframe), start, end, tuple(columns or ()),
            adjust, dividend_convention, day, follow_renames, self._action_version(), known_at,
            self.epoch(),
        )  # fmt: skip
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        out = self._compute(
            symbols, segments, actions, timeframe, start, end, columns, adjust,
            dividend_convention, day, known_at,
        )  # fmt: skip
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def _compute(
        self,
        symbols: list[str],
        segments: dict[str, list[Segment]],
        actions: pl.DataFrame,
        timeframe: Timeframe,
        start: datetime | None,
        end: datetime | None,
        columns: Sequence[str] | None,
        adjust: Adjust,
        convention: DividendConvention,
        effective_on: date | None,
        known_at: datetime | None,
    ) -> pl.DataFrame:
        cols = list(columns) if columns else list(BAR_COLUMNS)
        read_cols = list(dict.fromkeys([*_NEEDED, *cols]))
        # factors of bars up to `end` depend on events after it: read the tail too
        read_end = end if adjust == "none" else None
        plain = [s for s in symbols if len(segments[s]) <= 1 and _unbounded(segments[s])]
        frames: list[pl.DataFrame] = []
        acts: list[pl.DataFrame] = []
        if plain:
            frames.append(
                self.store.read(plain, timeframe, start, read_end, read_cols, as_of=known_at)
            )
            acts.append(actions.filter(pl.col("symbol").is_in(plain)))
        for sym in symbols:
            if sym in plain:
                continue
            segs = segments[sym]
            tickers = [seg.ticker for seg in segs]
            raw = self.store.read(tickers, timeframe, start, read_end, read_cols, as_of=known_at)
            frames.append(relabel(raw, segs, sym, "ts").sort("ts"))
            acts.append(
                relabel(actions.filter(pl.col("symbol").is_in(tickers)), segs, sym, "ex_date")
            )
        bars = pl.concat(frames) if len(frames) > 1 else frames[0]
        if adjust != "none":
            bars = adjust_bars(
                bars,
                pl.concat(acts),
                adjust=adjust,
                dividend_convention=convention,
                as_of=effective_on,
            )
            if end is not None:
                bars = bars.filter(pl.col("ts") < end)
        if len(frames) > 1:
            order = {s: i for i, s in enumerate(symbols)}
            bars = bars.sort(pl.col("symbol").replace_strict(order, return_dtype=pl.Int32), "ts")
        return bars.select(cols)


def _unbounded(segments: list[Segment]) -> bool:
    return all(seg.valid_from is None and seg.valid_to is None for seg in segments)
