"""Yahoo's `/v8/finance/chart/{symbol}`: parallel arrays, epoch seconds, split-adjusted OHLC.

Daily and coarser bars are stamped at the session open (09:30 New York); intraday bars at
their start. Open/high/low/close are split-adjusted (volume multiplied back), `adjclose`
is split-and-dividend adjusted, and `events` carry dividends (split-adjusted amounts) and
splits keyed by epoch-second strings, as the real service does. `period2` is exclusive.
"""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import numpy as np
import polars as pl

from quantivista.config import RateWindow
from quantivista.providers.simulator.formats.common import (
    EASTERN_TZ,
    Feed,
    Reply,
    SimRequest,
    VendorFormat,
    epoch_to_date,
    json_reply,
    session_opens,
    text_reply,
    with_adjustments,
)

__all__ = ["FORMAT"]

_INTERVALS = {
    "1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "60m": "1h", "1h": "1h",
    "1d": "1d", "1wk": "1w", "1mo": "1mo",
}  # fmt: skip
_VALID = "[1m, 2m, 5m, 15m, 30m, 60m, 90m, 1h, 1d, 5d, 1wk, 1mo, 3mo]"
_RANGES = {
    "1d": 1, "5d": 7, "1mo": 31, "3mo": 92, "6mo": 183, "1y": 366, "2y": 731,
    "5y": 1827, "10y": 3653, "max": 100_000,
}  # fmt: skip
# how far back intraday data reaches, and how much 1m data one request may span
_LOOKBACK_DAYS = {"1m": 30, "5m": 60, "15m": 60, "30m": 60, "60m": 730, "1h": 730}
_MAX_1M_SPAN_S = 8 * 86_400


def _error(code: str, description: str, status: int) -> Reply:
    return json_reply(
        {"chart": {"result": None, "error": {"code": code, "description": description}}}, status
    )


def _split_ratio(ratio: float) -> tuple[int, int]:
    frac = Fraction(ratio).limit_denominator(1000)
    return frac.numerator, frac.denominator


def _meta(feed: Feed, symbol: str, interval: str, prev_close: float | None) -> dict[str, Any]:
    inst = feed.market.instrument(symbol)
    sched = feed.market.calendar.schedule
    first_open = int(
        sched.filter(pl.col("session") == feed.market.sessions[0])["open"].dt.epoch("s")[0]
    )
    last = feed.last_session
    recent = feed.market.bars(symbol, last - timedelta(days=370), last)
    row = recent.row(-1, named=True) if recent.height else None
    today = sched.filter(pl.col("session") >= feed.market.as_of).head(1)
    if today.is_empty():
        today = sched.tail(1)
    t_open = int(today["open"].dt.epoch("s")[0])
    t_close = int(today["close"].dt.epoch("s")[0])
    delta = today["open"][0].astimezone(EASTERN_TZ).utcoffset()
    offset = int(delta.total_seconds()) if delta is not None else -18_000
    tz_name = "EDT" if offset == -4 * 3600 else "EST"

    def period(start: int, end: int) -> dict[str, Any]:
        return {"timezone": tz_name, "start": start, "end": end, "gmtoffset": offset}

    return {
        "currency": "USD",
        "symbol": symbol,
        "exchangeName": "NYQ",
        "fullExchangeName": "NYSE",
        "instrumentType": "EQUITY",
        "firstTradeDate": first_open,
        "regularMarketTime": _session_close(feed, row["ts"].date()) if row else 0,
        "hasPrePostMarketData": False,
        "gmtoffset": offset,
        "timezone": tz_name,
        "exchangeTimezoneName": "America/New_York",
        "regularMarketPrice": row["close"] if row else None,
        "fiftyTwoWeekHigh": float(recent["high"].max()) if row else None,  # type: ignore[arg-type]
        "fiftyTwoWeekLow": float(recent["low"].min()) if row else None,  # type: ignore[arg-type]
        "regularMarketDayHigh": row["high"] if row else None,
        "regularMarketDayLow": row["low"] if row else None,
        "regularMarketVolume": int(row["volume"]) if row else None,
        "longName": inst.name,
        "shortName": inst.name,
        "chartPreviousClose": prev_close,
        "priceHint": 2,
        "currentTradingPeriod": {
            "pre": period(t_open - 19_800, t_open),
            "regular": period(t_open, t_close),
            "post": period(t_close, t_close + 14_400),
        },
        "dataGranularity": interval,
        "range": "",
        "validRanges": [*list(_RANGES)[:-1], "ytd", "max"],
    }


def _session_close(feed: Feed, day: date) -> int:
    sched = feed.market.calendar.schedule.filter(pl.col("session") == day)
    return int(sched["close"].dt.epoch("s")[0])


def _window(req: SimRequest, feed: Feed) -> tuple[int, int] | Reply:
    last_close = int(
        feed.market.calendar.schedule.filter(pl.col("session") == feed.last_session)[
            "close"
        ].dt.epoch("s")[0]
    )
    if "period1" in req.query or "period2" in req.query:
        try:
            p1 = int(req.query.get("period1", "0"))
            p2 = int(req.query.get("period2", str(last_close + 1)))
        except ValueError:
            return _error("Bad Request", "Invalid input - period1/period2 must be integers", 400)
        return p1, p2
    rng = req.query.get("range", "1mo")
    if rng not in _RANGES:
        return _error("Bad Request", f"Invalid input - range={rng} is not supported", 400)
    return last_close - _RANGES[rng] * 86_400, last_close + 1


def chart(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/v8/finance/chart/{symbol}` like Yahoo."""
    symbol = req.path_params["symbol"].upper()
    interval = req.query.get("interval", "1d")
    if interval not in _INTERVALS:
        return _error(
            "Bad Request",
            f"Invalid input - interval={interval} is not supported. Valid intervals: {_VALID}",
            400,
        )
    if not feed.knows(symbol):
        return _error("Not Found", "No data found, symbol may be delisted", 404)
    window = _window(req, feed)
    if isinstance(window, Reply):
        return window
    p1, p2 = window
    intraday = interval in _LOOKBACK_DAYS
    if intraday:
        horizon = feed.market.as_of - timedelta(days=_LOOKBACK_DAYS[interval])
        if epoch_to_date(p1) < horizon:
            limit = _LOOKBACK_DAYS[interval]
            return _error(
                "Unprocessable Entity",
                f"{interval} data not available for startTime={p1} and endTime={p2}. "
                f"The requested range must be within the last {limit} days.",
                422,
            )
        if interval == "1m" and p2 - p1 > _MAX_1M_SPAN_S:
            return _error(
                "Unprocessable Entity",
                f"1m data not available for startTime={p1} and endTime={p2}. Only 7 days worth "
                "of 1m granularity data are allowed to be fetched per request.",
                422,
            )
    start = max(epoch_to_date(p1) - timedelta(days=1), date(1970, 1, 2))
    end = min(epoch_to_date(p2), feed.last_session)
    bars = feed.bars(symbol, start, end, _INTERVALS[interval])
    stamps = session_opens(feed, bars) if not intraday else bars["ts"].dt.epoch("s")
    bars = bars.with_columns(_t=stamps)
    before = bars.filter(pl.col("_t") < p1)
    bars = bars.filter((pl.col("_t") >= p1) & (pl.col("_t") < p2))
    result: dict[str, Any] = {}
    prev_close: float | None = None
    if bars.height:
        bars = with_adjustments(feed, symbol, bars)
        if before.height:
            prev = with_adjustments(feed, symbol, before.tail(1))
            prev_close = round(float(prev["close"][0] / prev["split_factor"][0]), 6)
        result["timestamp"] = bars["_t"].to_list()
        events = _events(req, feed, symbol, p1, p2)
        if events:
            result["events"] = events
        adj = bars.select(
            close=pl.col("close") / pl.col("split_factor"),
            open=pl.col("open") / pl.col("split_factor"),
            volume=(pl.col("volume") * pl.col("split_factor")).round(0).cast(pl.Int64),
            high=pl.col("high") / pl.col("split_factor"),
            low=pl.col("low") / pl.col("split_factor"),
            adjclose=pl.col("close") * pl.col("total_factor"),
        )
        quote = {k: adj[k].to_list() for k in ("close", "open", "volume", "high", "low")}
        indicators: dict[str, Any] = {"quote": [quote]}
        if not intraday:
            indicators["adjclose"] = [{"adjclose": adj["adjclose"].to_list()}]
        result["indicators"] = indicators
    else:
        result["indicators"] = {"quote": [{}]}
    body = {
        "chart": {
            "result": [{"meta": _meta(feed, symbol, interval, prev_close), **result}],
            "error": None,
        }
    }
    return json_reply(body)


def _events(req: SimRequest, feed: Feed, symbol: str, p1: int, p2: int) -> dict[str, Any]:
    wanted = req.query.get("events", "")
    table = feed.adjustments(symbol)
    table = table.with_columns(
        _t=table.select(ts=pl.col("session").cast(pl.Datetime("us", "UTC"))).pipe(
            lambda f: session_opens(feed, f)
        )
    ).filter((pl.col("_t") >= p1) & (pl.col("_t") < p2))
    out: dict[str, Any] = {}
    if "div" in wanted:
        divs = table.filter(pl.col("dividend").is_not_null())
        if divs.height:
            out["dividends"] = {
                str(t): {"amount": round(a / f, 6), "date": t}
                for t, a, f in divs.select("_t", "dividend", "split_factor").iter_rows()
            }
    if "split" in wanted:
        splits = table.filter(pl.col("split_ratio") != 1.0)
        if splits.height:
            entries = {}
            for t, ratio in splits.select("_t", "split_ratio").iter_rows():
                num, den = _split_ratio(ratio)
                entries[str(t)] = {
                    "date": t, "numerator": num, "denominator": den, "splitRatio": f"{num}:{den}",
                }  # fmt: skip
            out["splits"] = entries
    return out


def rate_limited(window: RateWindow, retry_after: int) -> Reply:
    """Yahoo throttles with a plain-text 429 from its edge."""
    reply = text_reply("Edge: Too Many Requests", 429)
    return Reply(429, reply.body, reply.media_type, {"Retry-After": str(retry_after)})


def error_body(req: SimRequest, rng: np.random.Generator) -> Reply:
    """Return a `chart.error` body with HTTP 200 (a backend hiccup the edge let through)."""
    return json_reply(
        {
            "chart": {
                "result": None,
                "error": {
                    "code": "Internal Server Error",
                    "description": "Timeout while fetching time series, please retry",
                },
            }
        }
    )


FORMAT = VendorFormat(
    name="yahoo",
    routes=(("/v8/finance/chart/{symbol}", chart),),
    rate_limited=rate_limited,
    error_body=error_body,
)
