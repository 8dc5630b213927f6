"""Polygon (Massive) aggregates `/v2/aggs/ticker/{T}/range/{m}/{span}/{from}/{to}`.

`t` is epoch milliseconds of the bar start; daily and coarser bars start at 00:00 New York.
`adjusted=true` (the default) is split-adjusted only. `limit` counts base aggregates
(minutes for minute/hour bars, days for day/week/month bars); a truncated answer carries
`next_url` with the next bar's start as `from` and a `cursor`, and no API key.
`/v3/reference/splits` and `/v3/reference/dividends` list one ticker's events, newest first.
"""

from __future__ import annotations

import base64
import json
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import numpy as np
import polars as pl

from quantivista.config import RateWindow
from quantivista.providers.simulator.formats.common import (
    Feed,
    Reply,
    SimRequest,
    VendorFormat,
    eastern_midnight,
    epoch_to_date,
    json_reply,
    request_id,
    with_adjustments,
)

__all__ = ["FORMAT"]

# (multiplier, timespan) -> market timeframe, base aggregates per bar
_SPANS: dict[tuple[int, str], tuple[str, int]] = {
    (1, "minute"): ("1m", 1),
    (5, "minute"): ("5m", 5),
    (15, "minute"): ("15m", 15),
    (30, "minute"): ("30m", 30),
    (1, "hour"): ("1h", 60),
    (60, "minute"): ("1h", 60),
    (1, "day"): ("1d", 1),
    (1, "week"): ("1w", 5),
    (1, "month"): ("1mo", 21),
}
_MAX_INTRADAY_DAYS = 62  # keeps one call's work bounded; clients page anyway


def _error(req: SimRequest, status: int, message: str) -> Reply:
    return json_reply({"status": "ERROR", "request_id": request_id(req), "error": message}, status)


def _bound(text: str) -> tuple[date, int | None]:
    """Return (date, epoch ms or None) of a `from`/`to` path segment."""
    if text.isdigit():
        ms = int(text)
        return epoch_to_date(ms / 1000), ms
    return date.fromisoformat(text), None


def _cursor(params: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(params).encode()).decode().rstrip("=")


def _uncursor(text: str) -> dict[str, Any]:
    padded = text + "=" * (-len(text) % 4)
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return data


def aggregates(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/v2/aggs/ticker/...` like Polygon, paging with `next_url`."""
    if not req.query.get("apiKey") and not req.headers.get("authorization"):
        return _error(req, 401, "API Key was not provided")
    p = req.path_params
    query: dict[str, Any] = dict(req.query)
    if "cursor" in query:
        try:
            query.update(_uncursor(query.pop("cursor")))
        except (ValueError, json.JSONDecodeError):
            return _error(req, 400, "Could not parse the cursor.")
    ticker = p["ticker"].upper()
    try:
        mult = int(p["multiplier"])
        start, start_ms = _bound(p["from"])
        end, end_ms = _bound(p["to"])
        limit = min(int(query.get("limit", 5000)), 50_000)
    except ValueError:
        return _error(req, 400, "Could not parse the request's parameters.")
    span = _SPANS.get((mult, p["timespan"]))
    if span is None:
        return _error(req, 400, f"Unsupported aggregate {mult}/{p['timespan']} in the simulator.")
    timeframe, base = span
    adjusted = str(query.get("adjusted", "true")).lower() != "false"
    descending = str(query.get("sort", "asc")).lower() == "desc"
    body: dict[str, Any] = {
        "ticker": ticker,
        "queryCount": 0,
        "resultsCount": 0,
        "adjusted": adjusted,
    }
    if not feed.knows(ticker):
        return json_reply({**body, "status": "OK", "request_id": request_id(req), "count": 0})
    if base < 390 and timeframe not in ("1d", "1w", "1mo"):
        end = min(end, start + timedelta(days=_MAX_INTRADAY_DAYS))
    bars = feed.bars(ticker, start, end, timeframe)
    stamps = eastern_midnight(pl.col("ts")) if timeframe in ("1d", "1w", "1mo") else pl.col("ts")
    bars = bars.with_columns(_t=stamps.dt.epoch("ms"))
    if start_ms is not None:
        bars = bars.filter(pl.col("_t") >= start_ms)
    if end_ms is not None:
        bars = bars.filter(pl.col("_t") <= end_ms)
    if descending:
        bars = bars.reverse()
    page_size = max(1, limit // base)
    page, rest = bars.head(page_size), bars.slice(page_size)
    if page.height == 0:
        return json_reply({**body, "status": "OK", "request_id": request_id(req), "count": 0})
    split = pl.lit(1.0)
    if adjusted:
        page = with_adjustments(feed, ticker, page)
        split = pl.col("split_factor")
    results = page.select(
        v=pl.col("volume") * split,
        vw=(pl.col("vwap") / split).round(4),
        o=pl.col("open") / split,
        c=pl.col("close") / split,
        h=pl.col("high") / split,
        l=pl.col("low") / split,
        t=pl.col("_t"),
        n=pl.col("trades"),
    ).to_dicts()
    out = {
        **body,
        "queryCount": page.height,
        "resultsCount": page.height,
        "results": results,
        "status": "OK",
        "request_id": request_id(req),
        "count": page.height,
    }
    if rest.height:
        nxt = int(rest["_t"][0])
        keep = {"adjusted": str(adjusted).lower(), "limit": limit, "sort": query.get("sort", "asc")}
        lo, hi = (p["from"], str(nxt)) if descending else (str(nxt), p["to"])
        out["next_url"] = (
            f"{req.base_url}/v2/aggs/ticker/{ticker}/range/{mult}/{p['timespan']}/{lo}/{hi}"
            f"?cursor={_cursor(keep)}"
        )
    return json_reply(out)


def _reference(req: SimRequest, feed: Feed, kind: str) -> Reply:
    """Answer `/v3/reference/splits|dividends` for one ticker, newest first, paged."""
    if not req.query.get("apiKey") and not req.headers.get("authorization"):
        return _error(req, 401, "API Key was not provided")
    ticker = req.query.get("ticker", "").upper()
    try:
        limit = min(max(int(req.query.get("limit", "10")), 1), 1000)
        offset = int(_uncursor(req.query["cursor"])["offset"]) if "cursor" in req.query else 0
    except (ValueError, KeyError, TypeError):
        return _error(req, 400, "Could not parse the request's parameters.")
    results: list[dict[str, Any]] = []
    if ticker and feed.knows(ticker):
        acts = feed.market.actions(ticker).sort("ex_date", descending=True)
        if kind == "splits":
            for day, ratio, symbol in (
                acts.filter(pl.col("action_type") == "split")
                .select("ex_date", "ratio", "symbol")
                .iter_rows()
            ):
                num, den = _fraction(ratio)
                results.append(
                    {"execution_date": str(day), "split_from": den, "split_to": num,
                     "ticker": symbol}
                )  # fmt: skip
        else:
            paid = acts.filter(pl.col("action_type").is_in(["dividend", "special_dividend"]))
            for kind_name, day, amount, symbol in paid.select(
                "action_type", "ex_date", "amount", "symbol"
            ).iter_rows():
                special = kind_name == "special_dividend"
                results.append(
                    {
                        "cash_amount": amount,
                        "declaration_date": str(day - timedelta(days=14)),
                        "dividend_type": "SC" if special else "CD",
                        "ex_dividend_date": str(day),
                        "frequency": 0 if special else 4,
                        "pay_date": str(day + timedelta(days=18)),
                        "record_date": str(day + timedelta(days=1)),
                        "ticker": symbol,
                    }
                )
    page = results[offset : offset + limit]
    out: dict[str, Any] = {"results": page, "status": "OK", "request_id": request_id(req)}
    if offset + limit < len(results):
        out["next_url"] = (
            f"{req.base_url}/v3/reference/{kind}?cursor={_cursor({'offset': offset + limit})}"
            f"&ticker={ticker}&limit={limit}"
        )
    return json_reply(out)


def _fraction(ratio: float) -> tuple[int, int]:
    frac = Fraction(ratio).limit_denominator(1000)
    return frac.numerator, frac.denominator


def splits(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/v3/reference/splits?ticker=...` (split_from old shares -> split_to new)."""
    return _reference(req, feed, "splits")


def dividends(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/v3/reference/dividends?ticker=...` (cash amounts as paid, unadjusted)."""
    return _reference(req, feed, "dividends")


def rate_limited(window: RateWindow, retry_after: int) -> Reply:
    """Polygon answers 429 with a JSON `status: ERROR` body."""
    reply = json_reply(
        {
            "status": "ERROR",
            "request_id": "0" * 32,
            "error": "You've exceeded the maximum requests per minute, please wait or upgrade "
            "your subscription to continue. https://polygon.io/pricing",
        },
        429,
    )
    return Reply(429, reply.body, reply.media_type, {"Retry-After": str(retry_after)})


def error_body(req: SimRequest, rng: np.random.Generator) -> Reply:
    """Return an HTTP-200 body whose status says ERROR."""
    return json_reply(
        {"status": "ERROR", "request_id": request_id(req), "error": "Internal server error"}
    )


FORMAT = VendorFormat(
    name="polygon",
    routes=(
        ("/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}", aggregates),
        ("/v3/reference/splits", splits),
        ("/v3/reference/dividends", dividends),
    ),
    rate_limited=rate_limited,
    error_body=error_body,
)
