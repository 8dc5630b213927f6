"""`yahoo`: the Yahoo Finance chart API (`/v8/finance/chart/{symbol}`), keyless.

Bars come as parallel arrays indexed by epoch-second `timestamp`s. Daily bars are stamped at
the regular-session open (09:30 New York), so they are re-stamped 00:00 UTC of their local
session date (in `meta.exchangeTimezoneName`); intraday stamps are bar starts in UTC already.

Raw prices: Yahoo's OHLC and volume are split-adjusted (as of the download), and so are its
dividend amounts. The parser undoes that with the splits in the same response: a bar stamped
before a split's date is multiplied by that split's ratio (numerator/denominator), its volume
and any earlier dividend divided/multiplied likewise; with several later splits the factors
multiply. A response only lists the splits inside its own window, so when a request ends
before today the client makes one more (monthly, cheap) call from the window's end to now for
the later splits and passes them to the parser as `later_splits`. `adjclose` (split and
dividend adjusted) is not used.

Empty windows (weekends) come as HTTP 200 without `timestamp`; errors as `chart.error`.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from functools import reduce
from typing import Any

import httpx
import polars as pl

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.model.instruments import AssetClass
from quantivista.model.timeframe import Timeframe
from quantivista.providers._parsing import (
    actions_frame,
    empty_actions,
    finish_bars,
    float_column,
    guarded,
    load_json,
    local_dates_to_utc,
    require,
    text_of,
)
from quantivista.providers.base import (
    BarRequest,
    FetchResult,
    PriceBasis,
    ProviderCapabilities,
    RawPayload,
)
from quantivista.providers.http import HttpProvider, path_part

__all__ = ["YahooProvider", "parse_chart", "parse_splits", "raise_chart_error"]

NAME = "yahoo"
_INTERVALS = {
    "1m": "1m", "2m": "2m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "60m",
    "90m": "90m", "1d": "1d", "1w": "1wk", "1mo": "1mo",
}  # fmt: skip
_TF_OF_GRANULARITY = {v: k for k, v in _INTERVALS.items()} | {"1h": "1h"}
_WINDOW_DAYS = {"1m": 7}  # Yahoo serves at most 7 days of 1m bars per request


_TRANSIENT_WORDS = ("internal server error", "timeout", "timed out", "unavailable", "retry")


def raise_chart_error(data: Any, symbol: str | None, status_code: int | None = None) -> None:
    """Raise the provider error a `chart.error` object means (no-op when there is none)."""
    if not isinstance(data, dict) or not isinstance(data.get("chart"), dict):
        return
    error = data["chart"].get("error")
    if not error:
        return
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    desc = str(error.get("description", error)) if isinstance(error, dict) else str(error)
    message = f"Yahoo chart error {code}: {desc}"[:300]
    ctx: dict[str, Any] = {"provider": NAME, "symbol": symbol, "status_code": status_code}
    low = (code + " " + desc).lower()
    if "not found" in low or "delisted" in low:
        raise SymbolNotFoundError(message, **ctx)
    if "unprocessable" in low or "not available" in low:
        raise EntitlementError(message, **ctx)  # outside the history Yahoo serves
    if any(word in low for word in _TRANSIENT_WORDS):
        # a backend hiccup passed through with HTTP 200: worth a retry, not a failover
        raise TransientProviderError(message, **ctx)
    raise ProviderError(message, **ctx)


def _events(result: dict[str, Any], kind: str, symbol: str | None) -> list[dict[str, Any]]:
    events = result.get("events") or {}
    require(events, dict, "events", NAME, symbol)
    items = events.get(kind) or {}
    require(items, dict, f"events.{kind}", NAME, symbol)
    return [require(v, dict, f"an event in {kind}", NAME, symbol) for v in items.values()]


def _split_factor(stamp: pl.Expr, splits: list[tuple[int, float]]) -> pl.Expr:
    """Product of the ratios of the splits dated after each stamp (1.0 when none)."""
    terms = [pl.when(stamp < at).then(pl.lit(r)).otherwise(pl.lit(1.0)) for at, r in splits]
    return reduce(lambda a, b: a * b, terms, pl.lit(1.0))


def _sniff_text(body: bytes | str, symbol: str) -> None:
    head = text_of(body)[:200].strip()
    if head.startswith("{"):
        return
    if "too many requests" in head.lower():
        raise RateLimitedError(
            f"Yahoo throttled the client: {head[:80]!r}", provider=NAME, symbol=symbol
        )
    if "will be right back" in head.lower():
        raise TransientProviderError("Yahoo outage page", provider=NAME, symbol=symbol)


def _result(data: Any, symbol: str) -> dict[str, Any]:
    raise_chart_error(data, symbol)
    require(data, dict, "the body", NAME, symbol)
    chart = require(data.get("chart"), dict, "'chart'", NAME, symbol)
    results = require(chart.get("result"), list, "chart.result", NAME, symbol)
    if not results:
        raise SymbolNotFoundError("Yahoo returned no chart result", provider=NAME, symbol=symbol)
    return require(results[0], dict, "chart.result[0]", NAME, symbol)  # type: ignore[no-any-return]


def _splits(result: dict[str, Any], symbol: str) -> list[tuple[int, float]]:
    splits = [
        (int(e["date"]), float(e["numerator"]) / float(e["denominator"]))
        for e in _events(result, "splits", symbol)
    ]
    if any(not (r > 0 and r != float("inf")) for _, r in splits):
        raise MalformedResponseError("Yahoo split with a bad ratio", provider=NAME, symbol=symbol)
    return splits


@guarded(NAME)
def parse_splits(body: bytes | str, symbol: str) -> list[tuple[int, float]]:
    """Return the `(epoch seconds, new shares per old share)` splits of a chart response."""
    return _splits(_result(load_json(body, NAME, symbol), symbol), symbol)


@guarded(NAME)
def parse_chart(
    body: bytes | str, symbol: str, later_splits: list[tuple[int, float]] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a chart response into raw canonical bars and corporate actions (see module doc).

    `later_splits` are splits after the response's window (from `parse_splits` of a later
    call); they scale the prices back too but are not returned as actions.
    """
    _sniff_text(body, symbol)
    data = load_json(body, NAME, symbol)
    result = _result(data, symbol)
    meta = require(result.get("meta") or {}, dict, "meta", NAME, symbol)
    granularity = str(meta.get("dataGranularity", "1d"))
    tf = _TF_OF_GRANULARITY.get(granularity)
    if tf is None:
        raise MalformedResponseError(
            f"unknown Yahoo granularity {granularity!r}", provider=NAME, symbol=symbol
        )
    tz = meta.get("exchangeTimezoneName") or "America/New_York"
    require(tz, str, "meta.exchangeTimezoneName", NAME, symbol)

    own = _splits(result, symbol)
    splits = sorted(set(own) | set(later_splits or ()))
    divs = _events(result, "dividends", symbol)
    currency = str(meta.get("currency") or "") or None
    actions = _actions(symbol, own, splits, divs, tz, currency)

    stamps = result.get("timestamp")
    if stamps is None:  # empty window: HTTP 200, no timestamps, indicators.quote == [{}]
        return finish_bars({}, symbol=symbol, timeframe=tf, provider=NAME), actions
    require(stamps, list, "timestamp", NAME, symbol)
    indicators = require(result.get("indicators"), dict, "indicators", NAME, symbol)
    quotes = require(indicators.get("quote"), list, "indicators.quote", NAME, symbol)
    quote = require(quotes[0] if quotes else None, dict, "indicators.quote[0]", NAME, symbol)
    n = len(stamps)
    cols: dict[str, pl.Series] = {}
    for name in ("open", "high", "low", "close", "volume"):
        values = require(quote.get(name), list, f"quote.{name}", NAME, symbol)
        if len(values) != n:
            raise MalformedResponseError(
                f"Yahoo {name} has {len(values)} values for {n} timestamps",
                provider=NAME,
                symbol=symbol,
            )
        cols[name] = float_column(name, values)
    epoch = pl.Series("epoch", stamps, dtype=pl.Int64, strict=True)
    df = pl.DataFrame({"epoch": epoch, **cols})
    factor = _split_factor(pl.col("epoch"), splits)
    ts = pl.from_epoch(pl.col("epoch"), time_unit="s").dt.replace_time_zone("UTC")
    if not Timeframe.parse(tf).is_intraday:
        ts = local_dates_to_utc(ts, tz)
    df = df.with_columns(
        ts.alias("ts"),
        *(pl.col(c) * factor for c in ("open", "high", "low", "close")),
        # Yahoo rounds split-multiplied volumes to whole shares; dividing gives back the
        # traded volume only up to that rounding, so round again (the identity when no split)
        pl.when(factor == 1.0)
        .then(pl.col("volume"))
        .otherwise((pl.col("volume") / factor).round(0)),
    ).drop("epoch")
    # Yahoo may repeat the live bar; the later copy is the fresher one
    df = df.unique("ts", keep="last", maintain_order=True)
    bars = finish_bars(df.to_dict(as_series=True), symbol=symbol, timeframe=tf, provider=NAME)
    return bars, actions


def _actions(
    symbol: str,
    own: list[tuple[int, float]],
    splits: list[tuple[int, float]],
    divs: list[dict[str, Any]],
    tz: str,
    currency: str | None,
) -> pl.DataFrame:
    def ex_dates(epochs: list[int]) -> pl.Series:
        s = pl.Series("e", epochs, dtype=pl.Int64, strict=True)
        return pl.select(
            pl.from_epoch(pl.lit(s), time_unit="s")
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(tz)
            .dt.date()
        ).to_series()

    split_part: dict[str, Any] = {
        "action_type": ["split"] * len(own),
        "ex_date": ex_dates([at for at, _ in own]),
        "ratio": pl.Series([r for _, r in own], dtype=pl.Float64),
        "amount": pl.Series([None] * len(own), dtype=pl.Float64),
        "currency": pl.Series([None] * len(own), dtype=pl.String),
    }
    div_at = [int(d["date"]) for d in divs]
    amount = float_column("amount", [d["amount"] for d in divs])
    factor = pl.select(_split_factor(pl.lit(pl.Series(div_at, dtype=pl.Int64)), splits)).to_series()
    div_part: dict[str, Any] = {
        "action_type": ["dividend"] * len(divs),
        "ex_date": ex_dates(div_at),
        "ratio": pl.Series([None] * len(divs), dtype=pl.Float64),
        "amount": amount * factor if len(divs) else amount,
        "currency": pl.Series(
            [str(d.get("currency") or currency or "") or None for d in divs], dtype=pl.String
        ),
    }
    frames = [pl.DataFrame(p) for p in (split_part, div_part) if len(p["action_type"])]
    if not frames:
        return empty_actions()
    df = pl.concat(frames, how="vertical_relaxed").with_columns(pl.lit(symbol).alias("symbol"))
    return actions_frame(df.to_dict(as_series=True), NAME)


class YahooProvider(HttpProvider):
    """Yahoo Finance chart API over HTTP (no key)."""

    name = NAME
    default_base_url = "https://query1.finance.yahoo.com"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset(_INTERVALS),
        price_basis=PriceBasis.NONE,  # the parser undoes Yahoo's split adjustment
        history_start=date(1962, 1, 2),
        intraday_lookback_days=60,
        realtime=False,
        corporate_actions=True,
        requires_key=False,
        cost_per_call=0.0,
        priority=10,
        notes="unofficial, IP-throttled; OHLC split-adjusted, returned raw by undoing splits",
    )

    def classify_status(
        self, response: httpx.Response, payload: RawPayload, symbol: str | None
    ) -> ProviderError | None:
        if response.status_code in (400, 404, 422) and payload.body.lstrip().startswith(b"{"):
            try:
                data = load_json(payload.body, NAME, symbol)
                raise_chart_error(data, symbol, response.status_code)
            except ProviderError as exc:
                exc.url = payload.url
                exc.context["url"] = payload.url
                return exc
        return super().classify_status(response, payload, symbol)

    @classmethod
    def planned_calls(cls, request: BarRequest, bars: int, now: datetime) -> int:
        """One call per window of the timeframe, and one for later splits of old windows."""
        step = timedelta(days=_WINDOW_DAYS.get(str(request.timeframe), 365 * 100))
        windows = math.ceil((request.end - request.start) / step)
        return windows + (1 if request.end < now - timedelta(days=1) else 0)

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        tf = str(request.timeframe)
        if tf not in _INTERVALS:
            raise EntitlementError(f"Yahoo has no {tf} bars", provider=NAME, symbol=request.symbol)
        path = f"/v8/finance/chart/{path_part(request.symbol)}"
        step = timedelta(days=_WINDOW_DAYS.get(tf, 365 * 100))
        bars_parts: list[pl.DataFrame] = []
        action_parts: list[pl.DataFrame] = []
        raw: list[RawPayload] = []
        later: list[tuple[int, float]] = []
        now = self.clock.now()
        if request.end < now - timedelta(days=1):  # splits after the window still scale it
            params = {
                "period1": str(int(request.end.timestamp())),
                "period2": str(int(now.timestamp())),
                "interval": "1mo",
                "events": "split",
            }
            _, payload = self.get(self.url(path), params, symbol=request.symbol)
            raw.append(payload)
            later = parse_splits(payload.body, request.symbol)
        lo = request.start
        while lo < request.end:
            hi = min(request.end, lo + step)
            params = {
                "period1": str(int(lo.timestamp())),
                "period2": str(int(hi.timestamp()) + (0 if hi.timestamp() % 1 == 0 else 1)),
                "interval": _INTERVALS[tf],
                "includePrePost": "false",
                "events": "div|split",
            }
            _, payload = self.get(self.url(path), params, symbol=request.symbol)
            raw.append(payload)
            bars, actions = parse_chart(payload.body, request.symbol, later)
            bars_parts.append(bars)
            action_parts.append(actions)
            lo = hi
        bars = pl.concat(bars_parts).unique("ts", keep="last").sort("ts")
        bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        actions = pl.concat(action_parts).unique().sort("ex_date", "action_type")
        return FetchResult(bars=bars, actions=actions, raw=raw, provider=NAME)
