"""Alpha Vantage's `/query` API: string numbers, US/Eastern local keys, HTTP-200 errors.

DAILY is raw as traded; DAILY_ADJUSTED adds the split-and-dividend adjusted close, the
dividend on its ex-date and the split coefficient; INTRADAY is split-and-dividend adjusted
unless `adjusted=false`, keyed by bar start in US/Eastern; CSV is newest first with CRLF.
"""

from __future__ import annotations

from datetime import date, timedelta

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

_DOCS = "https://www.alphavantage.co/documentation/"
_INTERVALS = {"1min": "1m", "5min": "5m", "15min": "15m", "30min": "30m", "60min": "1h"}
_COMPACT_ROWS = 100


def _error(function: str) -> Reply:
    msg = f"Invalid API call. Please retry or visit the documentation ({_DOCS}) for {function}."
    return json_reply({"Error Message": msg}, indent=4)


def _fmt(expr: pl.Expr, digits: int = 4) -> pl.Expr:
    """Format floats with a fixed number of decimals, as strings (vectorized)."""
    scaled = (expr * 10**digits).round(0).cast(pl.Int64)
    sign = pl.when(scaled < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    mag = scaled.abs()
    whole = (mag // 10**digits).cast(pl.String)
    frac = (mag % 10**digits).cast(pl.String).str.zfill(digits)
    text: pl.Expr = sign + whole + pl.lit(".") + frac
    return text


def _vol(expr: pl.Expr) -> pl.Expr:
    return expr.round(0).cast(pl.Int64).cast(pl.String)


def _series(df: pl.DataFrame, key: str, columns: dict[str, pl.Expr]) -> dict[str, object]:
    """Build {timestamp: {"1. open": ...}} newest first."""
    table = df.select(pl.col(key), **columns).reverse()
    names = list(columns)
    return {row[0]: dict(zip(names, row[1:], strict=True)) for row in table.iter_rows()}


def _csv(df: pl.DataFrame, key: str, columns: dict[str, pl.Expr]) -> Reply:
    table = df.select(pl.col(key).alias("timestamp"), **columns).reverse()
    text = table.write_csv(line_terminator="\r\n")
    return text_reply(text, media_type="application/x-download")


def _window(feed: Feed, req: SimRequest) -> tuple[str, str]:
    return req.query.get("outputsize", "compact"), req.query.get("datatype", "json")


def _daily(req: SimRequest, feed: Feed, adjusted: bool) -> Reply:
    function = "TIME_SERIES_DAILY_ADJUSTED" if adjusted else "TIME_SERIES_DAILY"
    symbol = req.query.get("symbol", "")
    if not symbol or not feed.knows(symbol):
        return _error(function)
    outputsize, datatype = _window(feed, req)
    last = feed.last_session
    start = feed.market.sessions[0] if outputsize == "full" else last - timedelta(days=160)
    df = feed.bars(symbol, start, last)
    if outputsize != "full":
        df = df.tail(_COMPACT_ROWS)
    day = pl.col("ts").dt.strftime("%Y-%m-%d")
    df = df.with_columns(_day=day)
    if adjusted:
        df = with_adjustments(feed, symbol, df)
        csv_cols = {
            "open": _fmt(pl.col("open")),
            "high": _fmt(pl.col("high")),
            "low": _fmt(pl.col("low")),
            "close": _fmt(pl.col("close")),
            "adjusted_close": _fmt(pl.col("close") * pl.col("total_factor")),
            "volume": _vol(pl.col("volume")),
            "dividend_amount": _fmt(pl.col("dividend").fill_null(0.0)),
            "split_coefficient": _fmt(pl.col("split_ratio")),
        }
        keys = [
            "1. open", "2. high", "3. low", "4. close", "5. adjusted close",
            "6. volume", "7. dividend amount", "8. split coefficient",
        ]  # fmt: skip
        info = "Daily Time Series with Splits and Dividend Events"
    else:
        csv_cols = {
            "open": _fmt(pl.col("open")),
            "high": _fmt(pl.col("high")),
            "low": _fmt(pl.col("low")),
            "close": _fmt(pl.col("close")),
            "volume": _vol(pl.col("volume")),
        }
        keys = ["1. open", "2. high", "3. low", "4. close", "5. volume"]
        info = "Daily Prices (open, high, low, close) and Volumes"
    if datatype == "csv":
        return _csv(df, "_day", csv_cols)
    columns = dict(zip(keys, csv_cols.values(), strict=True))
    return json_reply(
        {
            "Meta Data": {
                "1. Information": info,
                "2. Symbol": symbol,
                "3. Last Refreshed": str(last),
                "4. Output Size": "Full size" if outputsize == "full" else "Compact",
                "5. Time Zone": "US/Eastern",
            },
            "Time Series (Daily)": _series(df, "_day", columns),
        },
        indent=4,
    )


def _intraday(req: SimRequest, feed: Feed) -> Reply:
    symbol = req.query.get("symbol", "")
    interval = req.query.get("interval", "")
    if not symbol or not feed.knows(symbol) or interval not in _INTERVALS:
        return _error("TIME_SERIES_INTRADAY")
    outputsize, datatype = _window(feed, req)
    month = req.query.get("month")
    last = feed.last_session
    if month:
        try:
            first = date.fromisoformat(month + "-01")
        except ValueError:
            return _error("TIME_SERIES_INTRADAY")
        end = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        start = first
    else:
        # compact: the latest 100 bars; full: about the last month
        minutes = int(interval.removesuffix("min"))
        days = 31 if outputsize == "full" else max(3, (_COMPACT_ROWS * minutes) // 390 * 2 + 3)
        start, end = last - timedelta(days=days), last
    df = feed.bars(symbol, start, end, _INTERVALS[interval])
    if outputsize != "full" and not month:
        df = df.tail(_COMPACT_ROWS)
    factor = pl.lit(1.0)
    vol_factor = pl.lit(1.0)
    if req.query.get("adjusted", "true").lower() != "false" and not df.is_empty():
        df = with_adjustments(feed, symbol, df)
        factor = pl.col("total_factor")
        vol_factor = pl.col("split_factor")
    df = df.with_columns(_key=eastern_text(pl.col("ts"), "%Y-%m-%d %H:%M:%S"))
    cols = {
        "open": _fmt(pl.col("open") * factor),
        "high": _fmt(pl.col("high") * factor),
        "low": _fmt(pl.col("low") * factor),
        "close": _fmt(pl.col("close") * factor),
        "volume": _vol(pl.col("volume") * vol_factor),
    }
    if datatype == "csv":
        return _csv(df, "_key", cols)
    keys = ["1. open", "2. high", "3. low", "4. close", "5. volume"]
    refreshed = df["_key"][-1] if df.height else f"{last} 16:00:00"
    return json_reply(
        {
            "Meta Data": {
                "1. Information": f"Intraday ({interval}) open, high, low, close prices and volume",
                "2. Symbol": symbol,
                "3. Last Refreshed": refreshed,
                "4. Interval": interval,
                "5. Output Size": "Full size" if outputsize == "full" else "Compact",
                "6. Time Zone": "US/Eastern",
            },
            f"Time Series ({interval})": _series(
                df, "_key", dict(zip(keys, cols.values(), strict=True))
            ),
        },
        indent=4,
    )


def _quote(req: SimRequest, feed: Feed) -> Reply:
    symbol = req.query.get("symbol", "")
    if not symbol or not feed.knows(symbol):
        return _error("GLOBAL_QUOTE")
    last = feed.last_session
    df = feed.bars(symbol, last - timedelta(days=10), last).tail(2)
    if df.is_empty():
        return json_reply({"Global Quote": {}}, indent=4)
    row = df.row(-1, named=True)
    prev = df["close"][0] if df.height > 1 else row["close"]
    change = row["close"] - prev
    pct = change / prev * 100 if prev else 0.0
    values = [
        symbol, f"{row['open']:.4f}", f"{row['high']:.4f}", f"{row['low']:.4f}",
        f"{row['close']:.4f}", str(round(row["volume"])), f"{row['ts']:%Y-%m-%d}",
        f"{prev:.4f}", f"{change:.4f}", f"{pct:.4f}%",
    ]  # fmt: skip
    if req.query.get("datatype") == "csv":
        header = "symbol,open,high,low,price,volume,latestDay,previousClose,change,changePercent"
        return text_reply(
            f"{header}\r\n{','.join(values)}\r\n", media_type="application/x-download"
        )
    keys = [
        "01. symbol", "02. open", "03. high", "04. low", "05. price", "06. volume",
        "07. latest trading day", "08. previous close", "09. change", "10. change percent",
    ]  # fmt: skip
    return json_reply({"Global Quote": dict(zip(keys, values, strict=True))}, indent=4)


def query(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/query?function=...` like Alpha Vantage (errors are HTTP 200 JSON)."""
    if not req.query.get("apikey"):
        return json_reply(
            {
                "Error Message": "the parameter apikey is invalid or missing. Please claim your "
                "free API key on (https://www.alphavantage.co/support/#api-key). It should take "
                "less than 20 seconds."
            },
            indent=4,
        )
    function = req.query.get("function", "")
    if function == "TIME_SERIES_DAILY":
        return _daily(req, feed, adjusted=False)
    if function == "TIME_SERIES_DAILY_ADJUSTED":
        return _daily(req, feed, adjusted=True)
    if function == "TIME_SERIES_INTRADAY":
        return _intraday(req, feed)
    if function == "GLOBAL_QUOTE":
        return _quote(req, feed)
    return json_reply(
        {"Error Message": f"This API function ({function}) does not exist."}, indent=4
    )


def rate_limited(window: RateWindow, retry_after: int) -> Reply:
    """Alpha Vantage signals limits with HTTP 200 and a `Note`/`Information` body."""
    if window.seconds <= 1.0:
        text = (
            "Thank you for using Alpha Vantage! Please consider spreading out your free API "
            "requests more sparingly (1 request per second). You may subscribe to any of the "
            "premium plans at https://www.alphavantage.co/premium/ to lift the free key rate "
            "limit (25 requests per day), raise the per-second burst limit, and instantly "
            "unlock all premium endpoints"
        )
        body: dict[str, str] = {"Information": text}
    elif window.seconds < 86_400:
        body = {
            "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is "
            f"{window.calls} calls per minute and 500 calls per day. Please visit "
            "https://www.alphavantage.co/premium/ if you would like to target a higher API "
            "call frequency."
        }
    else:
        body = {
            "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is "
            f"{window.calls} requests per day. Please subscribe to any of the premium plans at "
            "https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."
        }
    reply = json_reply(body, indent=4)
    return Reply(200, reply.body, reply.media_type, {"Retry-After": str(retry_after)})


def error_body(req: SimRequest, rng: np.random.Generator) -> Reply:
    """Return one of Alpha Vantage's HTTP-200 throttling notices (`Note` or `Information`)."""
    window = RateWindow(calls=5, seconds=60.0 if rng.random() < 0.5 else 1.0)
    reply = rate_limited(window, 1)
    return Reply(200, reply.body, reply.media_type)


FORMAT = VendorFormat(
    name="alpha_vantage",
    routes=(("/query", query),),
    rate_limited=rate_limited,
    error_body=error_body,
)
