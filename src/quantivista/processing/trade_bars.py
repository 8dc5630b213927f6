"""Trades -> 1-minute bars by event time, with a watermark, amending bars for late trades.

    bars = MinuteBars(lateness=timedelta(seconds=2))
    out = bars.add(trades)       # a micro-batch of trades (symbol, ts, price, size, provider)
    out.bars                     # minutes the watermark closed: final bars
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

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

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
        "emitted": pl.Boolean(),
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
    """Build bars of `every` from trades by event time (state for open and recent minutes)."""

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
        self._state = pl.DataFrame(schema=_STATE)
        self.too_late = 0
        self.corrected = 0
        # the minute edges of the last release: until they move, a batch of trades in open
        # minutes releases nothing (the common case: no pass over the state)
        self._edges: tuple[int, int] | None = None
        self._every_us = int(every.total_seconds() * 1_000_000)

    @property
    def open_bars(self) -> int:
        """Return how many bars are still open (not yet released)."""
        return int((~self._state["emitted"]).sum())

    def add(self, trades: pl.DataFrame, now: datetime | None = None) -> Released:
        """Take a micro-batch of trades; return what the advanced watermark releases."""
        too_late = 0
        earliest: datetime | None = None
        if trades.height:
            if trades.schema != TRADE_SCHEMA:
                trades = trades.select(TRADE_SCHEMA.names()).cast(TRADE_SCHEMA)
            first = trades["ts"].min()
            earliest = first if isinstance(first, datetime) else None
            if self.watermark is not None and earliest is not None:
                floor = self.watermark - self.retention
                if earliest < floor:
                    late = pl.col("ts") < floor
                    too_late = int(trades.select(late.sum()).item())
                    trades = trades.filter(~late)
                    first = trades["ts"].min()
                    earliest = first if isinstance(first, datetime) else None
            self.too_late += too_late
        corrections = self._merge(trades) if trades.height else self._state.head(0)
        latest = trades["ts"].max() if trades.height else None
        self._advance(latest if isinstance(latest, datetime) else None, now)
        return self._release(corrections, too_late, earliest)

    def flush(self) -> Released:
        """Release every open bar as it is (at shutdown)."""
        if self._state.height:
            last = self._state["ts"].max()
            assert isinstance(last, datetime)
            self.watermark = max(self.watermark or last, last + self.every)
        return self._release(self._state.head(0), 0, None)

    def _merge(self, trades: pl.DataFrame) -> pl.DataFrame:
        """Fold trades into state; return the already released bars they changed."""
        part = (
            trades.lazy()
            .sort("ts")
            .with_columns(_t=pl.col("ts"))
            .group_by_dynamic("ts", every=self.every, group_by="symbol", closed="left")
            .agg(
                open=pl.col("price").first(),
                high=pl.col("price").max(),
                low=pl.col("price").min(),
                close=pl.col("price").last(),
                volume=pl.col("size").sum(),
                pv=(pl.col("price") * pl.col("size")).sum(),
                trades=pl.len().cast(pl.Int64),
                first_ts=pl.col("_t").min(),
                last_ts=pl.col("_t").max(),
                provider=pl.col("provider").last(),
            )
            .with_columns(emitted=False)
            .select(_STATE.names())
        )
        state = self._state.lazy()
        keys = part.select(_KEY)
        merged = (
            pl.concat([state.join(keys, on=_KEY, how="semi"), part])
            .group_by(_KEY)
            .agg(
                open=pl.col("open").sort_by("first_ts").first(),
                high=pl.col("high").max(),
                low=pl.col("low").min(),
                close=pl.col("close").sort_by("last_ts").last(),
                volume=pl.col("volume").sum(),
                pv=pl.col("pv").sum(),
                trades=pl.col("trades").sum(),
                first_ts=pl.col("first_ts").min(),
                last_ts=pl.col("last_ts").max(),
                provider=pl.col("provider").last(),
                emitted=pl.col("emitted").any(),
            )
            .select(_STATE.names())
        )
        # one plan: the state without the touched bars, plus them merged; and the merged
        rest = state.join(keys, on=_KEY, how="anti")
        self._state, changed = pl.collect_all([pl.concat([rest, merged]), merged])
        changed = changed.filter(pl.col("emitted"))
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
            return Released(_bars(self._state.head(0)), _bars(corrections), too_late)
        # a bar is over when its end is at or before the watermark; kept `retention` longer
        over = self.watermark - self.every
        gone = self.watermark - self.retention - self.every
        # bar starts are multiples of `every`: which bars `ts <= over` and `ts < gone` select
        # only changes when these edges move, or when a trade lands in a bar at or before
        # `over` (a late trade may start a bar that is over at once)
        edges = (_floor_us(over, self._every_us), _floor_us(gone, -self._every_us))
        late = earliest is not None and _floor_us(earliest, self._every_us) <= edges[0]
        if edges == self._edges and not late:
            return Released(_NO_BARS, _bars(corrections), too_late)
        self._edges = edges
        last_start = pl.lit(over, pl.Datetime("us", "UTC"))
        horizon = pl.lit(gone, pl.Datetime("us", "UTC"))
        state = self._state.lazy().with_columns(_over=pl.col("ts") <= last_start)
        ready = state.filter(pl.col("_over") & ~pl.col("emitted")).drop("_over")
        kept = (
            state.with_columns(emitted=pl.col("emitted") | pl.col("_over"))
            .filter(~(pl.col("emitted") & (pl.col("ts") < horizon)))
            .drop("_over")
        )
        released, self._state = pl.collect_all([ready, kept])
        return Released(_bars(released), _bars(corrections), too_late)


def _floor_us(ts: datetime, every_us: int) -> int:
    """Return `ts` in epoch microseconds, floored to a multiple of `every_us` (a negative
    `every_us` ceils: floor(-x) = -ceil(x))."""
    us = (ts - _EPOCH) // timedelta(microseconds=1)
    return us // every_us * every_us


def _bars(state: pl.DataFrame) -> pl.DataFrame:
    """Return partial-bar state rows as bars (vwap from price*volume), by symbol and time."""
    if state.is_empty():
        return _NO_BARS
    return _to_bars(state)


def _to_bars(state: pl.DataFrame) -> pl.DataFrame:
    return state.sort(_KEY).select(
        "symbol",
        "ts",
        "open",
        "high",
        "low",
        "close",
        "volume",
        vwap=pl.when(pl.col("volume") > 0).then(pl.col("pv") / pl.col("volume")),
        trades="trades",
        provider="provider",
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_BARS = _to_bars(pl.DataFrame(schema=_STATE))
