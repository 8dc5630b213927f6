"""Explicit gap filling: bars the calendar expects but no provider delivered.

Never applied silently: callers ask for it, and every made-up bar carries GAP_FILLED.
A filled bar repeats the previous close as open, high, low and close with zero volume
(the market was open, nothing traded as far as we know); vwap stays null, trades 0.
"""

from __future__ import annotations

import polars as pl

from quantivista.model.flags import QualityFlag
from quantivista.model.schema import BAR_COLUMNS, BAR_POLARS_SCHEMA
from quantivista.quality.validate import Validator
from quantivista.reference.calendars import TradingCalendar

__all__ = ["fill_gaps"]


def fill_gaps(bars: pl.DataFrame, calendar: TradingCalendar) -> tuple[pl.DataFrame, int]:
    """Return `bars` (canonical schema) with calendar gaps forward-filled, and the fill count.

    Only gaps between a series' first and last bar are filled (a late listing or an early
    delisting is not a gap). Works per (symbol, timeframe); daily and intraday bars.
    """
    if bars.is_empty():
        return bars, 0
    parts = []
    for (tf,), part in bars.group_by("timeframe", maintain_order=True):
        missing = Validator(calendar).missing(part)
        if missing.is_empty():
            continue
        prev = part.select("symbol", "ts", "close", "provider").sort("symbol", "ts")
        filled = (
            missing.sort("symbol", "ts")
            .join_asof(prev, on="ts", by="symbol", strategy="backward")
            .select(
                "symbol",
                "ts",
                "provider",
                timeframe=pl.lit(tf, pl.String),
                open="close",
                high="close",
                low="close",
                close="close",
                volume=pl.lit(0.0),
                vwap=pl.lit(None, pl.Float64),
                trades=pl.lit(0, pl.Int64),
                quality_flags=pl.lit(int(QualityFlag.GAP_FILLED), pl.UInt32),
                ingested_at=pl.lit(None, BAR_POLARS_SCHEMA["ingested_at"]),
                job_id=pl.lit(None, pl.String),
            )
        )
        parts.append(filled.select(BAR_COLUMNS).cast(BAR_POLARS_SCHEMA))
    if not parts:
        return bars, 0
    made = pl.concat(parts)
    out = pl.concat([bars.select(BAR_COLUMNS), made]).sort("symbol", "timeframe", "ts")
    return out, made.height
