"""IEX Cloud `/stable/stock/{symbol}/chart/{range}` and `/quote` (the service closed in 2024).

Daily rows carry split-adjusted `open..volume` plus unadjusted `uOpen..uVolume`; the `1d`
range (and `/chart/date/YYYYMMDD`) returns minute rows stamped by `date` + `minute` in New
York time; `chartInterval=N` keeps every Nth row, as IEX did. Errors are plain text:
404 `Unknown symbol`, 400 for bad values, 401 without a token.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl

from quantivista.config import RateWindow
from quantivista.providers.simulator.formats.common import (
    Feed,
    Reply,
    SimRequest,
    VendorFormat,
    eastern_text,
    json_reply,
    text_reply,
    with_adjustments,
)

__all__ = ["FORMAT"]

_RANGES = {
    "max": 100_000, "5y": 1827, "2y": 731, "1y": 366, "6m": 183, "3m": 92,
    "1m": 31, "1mm": 31, "5d": 7, "5dm": 7,
}  # fmt: skip
_BAD_VALUES = "You have supplied invalid values for this request"


def _check(req: SimRequest, feed: Feed) -> Reply | None:
    if not req.query.get("token"):
        return text_reply("An API key is required to access this data and no key was provided", 401)
    if not feed.knows(req.path_params["symbol"]):
        return text_reply("Unknown symbol", 404)
    return None


def _daily_rows(feed: Feed, symbol: str, start: date, end: date) -> list[dict[str, Any]]:
    bars = feed.bars(symbol, start, end)
    if bars.is_empty():
        return []
    bars = with_adjustments(feed, symbol, bars)
    s = pl.col("split_factor")
    first_close = pl.col("close").first() / s.first()
    out = bars.select(
        date=pl.col("ts").dt.strftime("%Y-%m-%d"),
        open=(pl.col("open") / s).round(4),
        close=(pl.col("close") / s).round(4),
        high=(pl.col("high") / s).round(4),
        low=(pl.col("low") / s).round(4),
        volume=(pl.col("volume") * s).round(0).cast(pl.Int64),
        uOpen=pl.col("open"),
        uClose=pl.col("close"),
        uHigh=pl.col("high"),
        uLow=pl.col("low"),
        uVolume=pl.col("volume").cast(pl.Int64),
        change=(pl.col("close") / s).diff().fill_null(0.0).round(4),
        changePercent=((pl.col("close") / s).pct_change().fill_null(0.0) * 100).round(4),
        label=pl.col("ts").dt.strftime("%b %-d"),
        changeOverTime=((pl.col("close") / s) / first_close - 1.0).round(6),
    )
    return out.to_dicts()


def _minute_rows(feed: Feed, symbol: str, day: date, every: int) -> list[dict[str, Any]]:
    bars = feed.bars(symbol, day, day, "1m")
    if bars.is_empty():
        return []
    bars = bars.gather_every(max(every, 1))
    out = bars.select(
        date=eastern_text(pl.col("ts"), "%Y-%m-%d"),
        minute=eastern_text(pl.col("ts"), "%H:%M"),
        label=eastern_text(pl.col("ts"), "%I:%M %p"),
        high=pl.col("high"),
        low=pl.col("low"),
        open=pl.col("open"),
        close=pl.col("close"),
        average=pl.col("vwap"),
        volume=pl.col("volume").cast(pl.Int64),
        notional=(pl.col("vwap") * pl.col("volume")).round(4),
        numberOfTrades=pl.col("trades"),
    )
    return out.to_dicts()


def chart(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/stable/stock/{symbol}/chart[/{range}]` like IEX Cloud."""
    if (denied := _check(req, feed)) is not None:
        return denied
    symbol = req.path_params["symbol"].upper()
    rng = req.path_params.get("range", "1m")
    last = feed.last_session
    try:
        every = int(req.query.get("chartInterval", "1"))
    except ValueError:
        return text_reply(_BAD_VALUES, 400)
    if rng == "1d":
        return json_reply(_minute_rows(feed, symbol, last, every))
    if rng == "ytd":
        return json_reply(_daily_rows(feed, symbol, date(last.year, 1, 1), last))
    if rng not in _RANGES:
        return text_reply(_BAD_VALUES, 400)
    rows = _daily_rows(feed, symbol, last - timedelta(days=_RANGES[rng]), last)
    return json_reply(rows[::every] if every > 1 else rows)


def chart_date(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/stable/stock/{symbol}/chart/date/YYYYMMDD` (minutes, or one day by day)."""
    if (denied := _check(req, feed)) is not None:
        return denied
    symbol = req.path_params["symbol"].upper()
    text = req.path_params["day"]
    if len(text) != 8 or not text.isdigit():
        return text_reply(_BAD_VALUES, 400)
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
        every = int(req.query.get("chartInterval", "1"))
    except ValueError:
        return text_reply(_BAD_VALUES, 400)
    if req.query.get("chartByDay", "false").lower() == "true":
        return json_reply(_daily_rows(feed, symbol, day, day))
    return json_reply(_minute_rows(feed, symbol, day, every))


def quote(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/stable/stock/{symbol}/quote` with the last session's values."""
    if (denied := _check(req, feed)) is not None:
        return denied
    symbol = req.path_params["symbol"].upper()
    inst = feed.market.instrument(symbol)
    last = feed.last_session
    year = feed.bars(symbol, last - timedelta(days=366), last)
    if year.is_empty():
        return text_reply("Unknown symbol", 404)
    row = year.row(-1, named=True)
    prev = float(year["close"][-2]) if year.height > 1 else float(row["close"])
    sched = feed.market.calendar.schedule.filter(pl.col("session") == row["ts"].date())
    open_ms = int(sched["open"].dt.epoch("ms")[0])
    close_ms = int(sched["close"].dt.epoch("ms")[0])
    close = float(row["close"])
    year_start = float(year.filter(pl.col("ts").dt.year() == last.year)["close"][0])
    return json_reply(
        {
            "symbol": symbol,
            "companyName": inst.name,
            "calculationPrice": "close",
            "open": row["open"],
            "openTime": open_ms,
            "close": close,
            "closeTime": close_ms,
            "high": row["high"],
            "low": row["low"],
            "latestPrice": close,
            "latestSource": "Close",
            "latestTime": f"{last:%B} {last.day}, {last.year}",
            "latestUpdate": close_ms,
            "latestVolume": int(row["volume"]),
            "iexRealtimePrice": close,
            "iexRealtimeSize": 100,
            "iexLastUpdated": close_ms,
            "delayedPrice": close,
            "delayedPriceTime": close_ms,
            "extendedPrice": close,
            "extendedChange": 0.0,
            "extendedChangePercent": 0.0,
            "extendedPriceTime": close_ms,
            "previousClose": prev,
            "change": round(close - prev, 4),
            "changePercent": round((close - prev) / prev, 5),
            "iexMarketPercent": 0.02,
            "iexVolume": int(row["volume"] * 0.02),
            "avgTotalVolume": int(year["volume"].tail(30).mean()),  # type: ignore[arg-type]
            "iexBidPrice": 0,
            "iexBidSize": 0,
            "iexAskPrice": 0,
            "iexAskSize": 0,
            "marketCap": int(close * 1e8),
            "peRatio": 20.0,
            "week52High": float(year["high"].max()),  # type: ignore[arg-type]
            "week52Low": float(year["low"].min()),  # type: ignore[arg-type]
            "ytdChange": round(close / year_start - 1.0, 6),
        }
    )


def rate_limited(window: RateWindow, retry_after: int) -> Reply:
    """IEX Cloud answered 429 in plain text."""
    reply = text_reply("Too Many Requests", 429)
    return Reply(429, reply.body, reply.media_type, {"Retry-After": str(retry_after)})


def error_body(req: SimRequest, rng: np.random.Generator) -> Reply:
    """Return HTTP 200 with an empty chart (IEX's answer when it had nothing)."""
    return json_reply([])


FORMAT = VendorFormat(
    name="iex_cloud",
    routes=(
        ("/stable/stock/{symbol}/quote", quote),
        ("/stable/stock/{symbol}/chart/date/{day}", chart_date),
        ("/stable/stock/{symbol}/chart/{range}", chart),
        ("/stable/stock/{symbol}/chart", chart),
    ),
    rate_limited=rate_limited,
    error_body=error_body,
)
