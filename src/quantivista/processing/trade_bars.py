"""Trades -> 1-minute bars by event time, with a watermark, amending bars for late trades.

    bars = MinuteBars(lateness=timedelta(seconds=2))
    out = bars.add(trades)       # a micro-batch of trades (symbol, ts, price, size, provider)
    out.bars                     # minutes the watermark closed: final bars (canonical 1m)
    out.corrections              # closed minutes a late trade changed: the amended bars

Each micro-batch is aggregated with `group_by_dynamic` into partial bars, which merge with the
partial bars kept in state (open/high/low/close/volume/price*volume/count combine across
batches). The watermark is the latest trade time less `lateness` (or the clock less
`lateness + idle`, so a quiet symbol's minute still closes); a minute closes when its end is
at or before the watermark. Closed bars are kept for `retention`, so a trade up to that late
amends its bar and the bar goes out again as a correction; an older trade is counted in
`too_late` and dropped (the store's bar for that minute is final).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from quantivista.model.schema import bar_exprs, utc_lit

__all__ = ["TRADE_SCHEMA", "MinuteBars", "Released"]

TRADE_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "ts": pl.Datetime("us", "UTC"),
        "price": pl.Float64(),
        "size": pl.Float64(),
        "provider": pl.String(),
    }
)
_STATE = pl.Schema(
    {
        "symbol": pl.String(),
        "ts": pl.Datetime("us", "UTC"),
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
        "pv": pl.Float64(),
        "trades": pl.Int64(),
        "first_ts": pl.Datetime("us", "UTC"),
        "last_ts": pl.Datetime("us", "UTC"),
        "provider": pl.String(),
    }
)
_KEY = ["symbol", "ts"]


@dataclass(frozen=True, slots=True)
class Released:
    """What one micro-batch released: new final bars, amended bars, and dropped trades."""

    bars: pl.DataFrame
    corrections: pl.DataFrame
    too_late: int = 0

    @property
    def empty(self) -> bool:
        return self.bars.is_empty() and self.corrections.is_empty()


class MinuteBars:
    """Build bars of `every` from trades by event time (state for open and recent minutes).

    The state is two small frames: the open bars (not released yet) and the closed ones
    (released, kept `retention` for corrections). A micro-batch of trades in open minutes
    (the common case) is one aggregation and one merge with the open bars: two eager
    plans, no joins (a micro-batch is folded in well under a millisecond)."""

    def __init__(
        self,
        *,
        every: timedelta = timedelta(minutes=1),
        lateness: timedelta = timedelta(seconds=2),
        retention: timedelta = timedelta(hours=1),
        idle: timedelta | None = None,
    ) -> None:
        self.every = every
        self.lateness = lateness
        self.retention = retention
        self.idle = idle
        self.watermark: datetime | None = None
        self._open = pl.DataFrame(schema=_STATE)
        self._closed = pl.DataFrame(schema=_STATE)
        self.too_late = 0
        self.corrected = 0
        # the minute edges of the last release: until they move, a batch of trades in open
        # minutes releases nothing (the common case: no pass over the state). Bars that
        # start at or before edges[0] are closed.
        self._edges: tuple[int, int] | None = None
        self._every_us = int(every.total_seconds() * 1_000_000)
        minutes = every // timedelta(minutes=1)
        self.timeframe = f"{minutes}m" if minutes < 60 else f"{minutes // 60}h"  # the bars'

    @property
    def open_bars(self) -> int:
        """Return how many bars are still open (not yet released)."""
        return self._open.height

    def next_close(self, trades: pl.DataFrame | None = None) -> datetime | None:
        """Return the event time a trade must reach to close the oldest open bar (the
        watermark passes its end), or None when no bar is open. With no bar open, the
        oldest bar `trades` would open counts."""
        if self._open.is_empty():
            first = trades["ts"].min() if trades is not None and trades.height else None
            if not isinstance(first, datetime):
                return None
            start = _from_us(_floor_us(first, self._every_us))
        else:
            oldest = self._open["ts"].min()
            assert isinstance(oldest, datetime)
            start = oldest
        return start + self.every + self.lateness

    def add(self, trades: pl.DataFrame, now: datetime | None = None) -> Released:
        """Take a micro-batch of trades; return what the advanced watermark releases."""
        too_late = 0
        earliest: datetime | None = None
        corrections = _NO_STATE
        if trades.height:
            if trades.schema != TRADE_SCHEMA:
                trades = trades.select(TRADE_SCHEMA.names()).cast(TRADE_SCHEMA)
            first = trades["ts"].min()
            earliest = first if isinstance(first, datetime) else None
            if self.watermark is not None and earliest is not None:
                floor = self.watermark - self.retention
                if earliest < floor:
                    late = trades["ts"] < floor
                    too_late = int(late.sum())
                    trades = trades.filter(~late)
                    first = trades["ts"].min()
                    earliest = first if isinstance(first, datetime) else None
            self.too_late += too_late
        if trades.height:
            corrections = self._fold(_aggregate(trades, self._every_us), earliest)
        latest = trades["ts"].max() if trades.height else None
        self._advance(latest if isinstance(latest, datetime) else None, now)
        return self._release(corrections, too_late, earliest)

    def flush(self) -> Released:
        """Release every open bar as it is (at shutdown)."""
        if self._open.height:
            last = self._open["ts"].max()
            assert isinstance(last, datetime)
            self.watermark = max(self.watermark or last, last + self.every)
        return self._release(_NO_STATE, 0, None)

    def _fold(self, part: pl.DataFrame, earliest: datetime | None) -> pl.DataFrame:
        """Merge partial bars into state; return the closed bars they changed."""
        closed_edge = self._edges[0] if self._edges is not None else None
        if (
            closed_edge is None
            or earliest is None
            or _floor_us(earliest, self._every_us) > closed_edge
        ):
            self._open = _merge(self._open, part)  # every bar still open
            return _NO_STATE
        # trades in closed minutes: an existing bar is amended (a correction); a bar that
        # did not exist yet is open (and released at once, its minute being over)
        edge = utc_lit(_from_us(closed_edge))
        late = part.filter(pl.col("ts") <= edge)
        part = part.filter(pl.col("ts") > edge)
        known = late.join(self._closed.select(_KEY), on=_KEY, how="semi")
        fresh = late.join(known.select(_KEY), on=_KEY, how="anti")
        self._open = _merge(self._open, pl.concat([part, fresh]))
        if known.is_empty():
            return _NO_STATE
        touched = self._closed.join(known.select(_KEY), on=_KEY, how="semi")
        changed = _merge(touched, known)
        rest = self._closed.join(known.select(_KEY), on=_KEY, how="anti")
        self._closed = pl.concat([rest, changed])
        self.corrected += changed.height
        return changed

    def _advance(self, latest: datetime | None, now: datetime | None) -> None:
        candidates = [self.watermark] if self.watermark is not None else []
        if latest is not None:
            candidates.append(latest - self.lateness)
        if now is not None and self.idle is not None:
            candidates.append(now.astimezone(UTC) - self.lateness - self.idle)
        if candidates:
            self.watermark = max(candidates)

    def _release(
        self, corrections: pl.DataFrame, too_late: int, earliest: datetime | None
    ) -> Released:
        if self.watermark is None:
            return Released(_NO_BARS, _bars(corrections, self.timeframe), too_late)
        # a bar is over when its end is at or before the watermark; kept `retention` longer
        over = self.watermark - self.every
        gone = self.watermark - self.retention - self.every
        # bar starts are multiples of `every`: which bars `ts <= over` and `ts < gone` select
        # only changes when these edges move, or when a trade lands in a bar at or before
        # `over` (a late trade may start a bar that is over at once)
        edges = (_floor_us(over, self._every_us), _floor_us(gone, -self._every_us))
        late = earliest is not None and _floor_us(earliest, self._every_us) <= edges[0]
        if edges == self._edges and not late:
            return Released(_NO_BARS, _bars(corrections, self.timeframe), too_late)
        self._edges = edges
        last_start, horizon = utc_lit(over), utc_lit(gone)  # (a datetime literal: ~0.1 ms)
        ready = self._open.filter(pl.col("ts") <= last_start)
        if ready.height:
            self._open = self._open.filter(pl.col("ts") > last_start)
            self._closed = pl.concat([self._closed, ready])
        oldest = self._closed["ts"].min()
        if isinstance(oldest, datetime) and oldest < gone:
            self._closed = self._closed.filter(pl.col("ts") >= horizon)
        return Released(_bars(ready, self.timeframe), _bars(corrections, self.timeframe), too_late)


def _aggregate(trades: pl.DataFrame, every_us: int) -> pl.DataFrame:
    """Return the partial bars of a micro-batch of trades (first/last by time, then by
    arrival; a live feed arrives in time order, so the sort is mostly skipped)."""
    if not trades["ts"].is_sorted():
        trades = trades.sort("ts", maintain_order=True)
    start, aggs = _aggregate_exprs(every_us)
    # keys then aggregations: the columns of `_STATE`, in its order (no select after)
    return trades.group_by("symbol", start).agg(aggs)


@functools.cache
def _aggregate_exprs(every_us: int) -> tuple[pl.Expr, list[pl.Expr]]:
    """The key and aggregations of `_aggregate`, built once (a micro-batch would otherwise
    build them again, holding the GIL the store thread waits for)."""
    start = (pl.col("ts").dt.epoch("us") // every_us * every_us).cast(pl.Datetime("us", "UTC"))
    return start.alias("ts"), [
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("size").sum().alias("volume"),
        (pl.col("price") * pl.col("size")).sum().alias("pv"),
        pl.len().cast(pl.Int64).alias("trades"),
        pl.col("ts").first().alias("first_ts"),
        pl.col("ts").last().alias("last_ts"),
        pl.col("provider").last().alias("provider"),
    ]


def _merge(state: pl.DataFrame, part: pl.DataFrame) -> pl.DataFrame:
    """Combine partial bars with the state's bars of the same keys (`part` arrived later:
    of equal times, its close wins and the state's open stays)."""
    if state.is_empty():
        return part
    if part.is_empty():
        return state
    # keys then aggregations: the columns of `_STATE`, in its order (no select after)
    return pl.concat([state, part]).group_by(_KEY).agg(_MERGE)


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _floor_us(ts: datetime, every_us: int) -> int:
    """Return `ts` in epoch microseconds, floored to a multiple of `every_us` (a negative
    `every_us` ceils: floor(-x) = -ceil(x))."""
    us = (ts - _EPOCH) // timedelta(microseconds=1)
    return us // every_us * every_us


def _bars(state: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Return partial-bar state rows as bars (vwap from price*volume), by symbol and time."""
    if state.is_empty():
        return _NO_BARS
    return _to_bars(state, timeframe)


@functools.cache
def _bar_select(timeframe: str) -> list[pl.Expr]:
    """The select of canonical bars from state rows (`bar_exprs`: clean, no lineage yet);
    built once (a release would otherwise build its ~40 expression nodes again)."""
    vwap = pl.when(pl.col("volume") > 0).then(pl.col("pv") / pl.col("volume"))
    return bar_exprs(timeframe, vwap=vwap)


def _to_bars(state: pl.DataFrame, timeframe: str = "1m") -> pl.DataFrame:
    return state.sort(_KEY).select(_bar_select(timeframe))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MERGE = [  # `_merge`'s aggregations, built once
    pl.col("open").sort_by("first_ts", maintain_order=True).first(),
    pl.col("high").max(),
    pl.col("low").min(),
    pl.col("close").sort_by("last_ts", maintain_order=True).last(),
    pl.col("volume").sum(),
    pl.col("pv").sum(),
    pl.col("trades").sum(),
    pl.col("first_ts").min(),
    pl.col("last_ts").max(),
    pl.col("provider").last(),
]
_NO_STATE = pl.DataFrame(schema=_STATE)
_NO_BARS = _to_bars(_NO_STATE)
