"""Ticker segments of one instrument, from symbol_change events, and stitched reads.

Bars and actions are stored under the ticker in use on each date. An instrument renamed
FB -> META (ex-date 2022-06-09) has two segments: FB up to 2022-06-08 and META from
2022-06-09. Reading "META" reads both and labels the result META. A recycled ticker (WM of
Washington Mutual until 2008, WM of Waste Management since 2009) only covers the dates of
the segment the walk reaches, so the two instruments never mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

__all__ = ["Segment", "relabel", "ticker_segments"]

_MAX_HOPS = 64  # a rename chain longer than this is a data error (a cycle)


@dataclass(frozen=True)
class Segment:
    """One ticker of an instrument, used on [valid_from, valid_to] (None = open end)."""

    ticker: str
    valid_from: date | None
    valid_to: date | None


def ticker_segments(symbol: str, actions: pl.DataFrame, on: date | None = None) -> list[Segment]:
    """Return the segments of the instrument that uses `symbol` on `on` (default: latest).

    Walks symbol_change events backwards (a loop over renames, not over rows), oldest
    segment first.
    """
    changes = actions.filter(pl.col("action_type") == "symbol_change").select(
        "symbol", "new_symbol", "ex_date"
    )
    segments: list[Segment] = []
    current, upper = symbol, on
    for _ in range(_MAX_HOPS):
        into = changes.filter(pl.col("new_symbol") == current)
        if upper is not None:
            into = into.filter(pl.col("ex_date") <= upper)
        # the ticker may also have been given up later than `upper`; cap this segment there
        out = changes.filter(pl.col("symbol") == current)
        if upper is None and out.height:
            latest_in = into["ex_date"].max() if into.height else None
            later_out = out.filter(
                pl.col("ex_date") > latest_in if latest_in is not None else pl.lit(True)
            )
            if later_out.height and not segments:
                first_out: date = later_out["ex_date"].min()  # type: ignore[assignment]
                upper = first_out - timedelta(days=1)
        if into.is_empty():
            segments.append(Segment(current, None, upper))
            break
        event = into.sort("ex_date").row(-1, named=True)
        segments.append(Segment(current, event["ex_date"], upper))
        current, upper = event["symbol"], event["ex_date"] - timedelta(days=1)
    return segments[::-1]


def relabel(frame: pl.DataFrame, segments: list[Segment], symbol: str, column: str) -> pl.DataFrame:
    """Keep the rows of `frame` inside their ticker's segment and label them `symbol`.

    `column` is the date-like column that decides the segment (`ts` for bars, `ex_date`
    for actions).
    """
    if frame.is_empty():
        return frame
    day = pl.col(column).cast(pl.Date) if column == "ts" else pl.col(column)
    keep = pl.lit(False)
    for seg in segments:
        cond = pl.col("symbol") == seg.ticker
        if seg.valid_from is not None:
            cond = cond & (day >= seg.valid_from)
        if seg.valid_to is not None:
            cond = cond & (day <= seg.valid_to)
        keep = keep | cond
    return frame.filter(keep).with_columns(symbol=pl.lit(symbol))
