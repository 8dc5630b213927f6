"""Multi-timeframe storage: 1-minute base bars rolled up to 5m, 15m, 1h and 1d by session.

Intraday buckets tile each exchange session from its open (the last bucket of a session
may be short, e.g. 15:30-16:00 for 1h on NYSE); daily bars are stamped at 00:00 UTC of the
session date, like provider daily bars. Aggregation: first open, max high, min low, last
close, summed volume and trades, volume-weighted vwap, OR of quality flags; a rolled-up
bar's `ingested_at` is the newest of its inputs, so as-of reads of derived timeframes agree
with the base bars they come from. When base bars change, only their sessions are rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from quantivista.model.schema import BAR_COLUMNS
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.reference.calendars import TradingCalendar
from quantivista.storage.base import BarStore, UpsertStats
from quantivista.timeutil import day_start_utc

__all__ = ["DEFAULT_TARGETS", "Rollup", "rollup"]

DEFAULT_TARGETS: tuple[str, ...] = ("5m", "15m", "1h", "1d")
_BASE = Timeframe.parse("1m")


def _with_sessions(base: pl.DataFrame, calendar: TradingCalendar) -> pl.DataFrame:
    opens = calendar.schedule.select(
        pl.col("session").alias("_session"), pl.col("open").alias("_open")
    )
    return base.with_columns(_session=calendar.session_of(pl.col("ts"))).join(
        opens, on="_session", how="left"
    )


def rollup(base: pl.DataFrame, calendar: TradingCalendar, timeframe: TimeframeLike) -> pl.DataFrame:
    """Return `base` 1-minute bars (canonical schema, any symbols) rolled up to `timeframe`."""
    tf = Timeframe.parse(timeframe)
    text = str(tf)
    keyed = _with_sessions(base, calendar)
    if text == "1d":
        bucket = pl.col("_session").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif tf.is_intraday and tf.seconds is not None and tf.seconds > 60:
        step = tf.seconds
        offset = ((pl.col("ts") - pl.col("_open")).dt.total_seconds() // step) * step
        bucket = pl.col("_open") + pl.duration(seconds=offset)
    else:
        raise ValueError(f"cannot roll 1m bars up to {text}")
    vol = pl.col("volume")
    return (
        keyed.with_columns(_bucket=bucket)
        .sort("symbol", "ts")
        .group_by("symbol", "_bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            vol.sum(),
            ((pl.col("vwap").fill_null(pl.col("close")) * vol).sum() / vol.sum()).alias("vwap"),
            pl.col("trades").sum(),
            pl.col("provider").first(),
            pl.col("quality_flags").bitwise_or(),
            pl.col("ingested_at").max(),
            pl.col("job_id").sort_by("ingested_at").last(),
        )
        .with_columns(
            ts=pl.col("_bucket"),
            timeframe=pl.lit(text),
            vwap=pl.when(pl.col("volume") > 0).then("vwap").otherwise(None),
        )
        .select(BAR_COLUMNS)
    )


class Rollup:
    """Keep derived timeframes consistent with the 1-minute bars of a store."""

    def __init__(
        self,
        store: BarStore,
        calendar: TradingCalendar,
        targets: Sequence[str] = DEFAULT_TARGETS,
    ) -> None:
        self.store = store
        self.calendar = calendar
        self.targets = [str(Timeframe.parse(t)) for t in targets]

    def refresh(self, changed: pl.DataFrame) -> UpsertStats:
        """Rebuild the derived bars of every (symbol, session) touched by `changed` 1m bars."""
        total = UpsertStats()
        base = changed.filter(pl.col("timeframe") == str(_BASE))
        if base.is_empty() or not self.targets:
            return total
        touched = (
            _with_sessions(base.select("symbol", "ts"), self.calendar)
            .select("symbol", "_session")
            .unique()
        )
        for (symbol,), part in touched.group_by("symbol", maintain_order=True):
            sessions = part["_session"]
            lo = day_start_utc(sessions.min()) - timedelta(days=1)  # type: ignore[arg-type]
            hi = day_start_utc(sessions.max()) + timedelta(days=2)  # type: ignore[arg-type]
            minutes = self.store.read([str(symbol)], _BASE, lo, hi)
            minutes = _with_sessions(minutes, self.calendar).filter(
                pl.col("_session").is_in(sessions.implode())
            )
            minutes = minutes.select(BAR_COLUMNS)
            if minutes.is_empty():
                continue
            derived = [rollup(minutes, self.calendar, t) for t in self.targets]
            total += self.store.upsert(pl.concat(derived))
        return total
