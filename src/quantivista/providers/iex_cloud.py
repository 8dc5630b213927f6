"""`iex_cloud`: IEX Cloud chart and quote endpoints.

IEX Cloud shut its data API down upstream on 2024-08-31. The client stays for services that
still speak its API (self-hosted replays, compatible vendors, the provider simulator) and
for re-parsing recorded history; point `base_url` at such a service.

Daily rows carry split-adjusted `open..volume` and unadjusted `uOpen..uVolume`: the parser
uses the unadjusted ones when present (raw prices); a daily response without them gives
split-adjusted bars, and the client says so in `FetchResult.metadata["price_basis"]`.
Minute rows carry `date` + `minute` in New York time (bar start), IEX-only volume, `average`
(taken as VWAP) and `numberOfTrades`; with `chartInterval=N` IEX returns every Nth one-minute
bar, so those rows stay `1m` bars.
Errors are plain-text bodies with 4xx statuses (`Unknown symbol`, quota, bad key).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import polars as pl

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
    SymbolNotFoundError,
)
from quantivista.model.instruments import AssetClass
from quantivista.model.ticks import Quote
from quantivista.providers._parsing import (
    finish_bars,
    float_column,
    guarded,
    load_json,
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

__all__ = ["IexCloudProvider", "chart_basis", "classify_text", "parse_chart", "parse_quote"]

NAME = "iex_cloud"
EXCHANGE_TZ = "America/New_York"
_RANGES = (("5d", 7), ("1m", 31), ("3m", 92), ("6m", 183), ("1y", 366), ("2y", 731), ("5y", 1827))


def classify_text(text: str, symbol: str | None, status_code: int | None = None) -> ProviderError:
    """Return the error one of IEX Cloud's plain-text error bodies means."""
    low = text.lower()
    ctx: dict[str, Any] = {"provider": NAME, "symbol": symbol, "status_code": status_code}
    short = text.strip()[:200]
    if "unknown symbol" in low or "not found" in low:
        return SymbolNotFoundError(f"IEX Cloud: {short}", **ctx)
    if "quota" in low or status_code == 402:
        return QuotaExhaustedError(f"IEX Cloud: {short}", **ctx)
    if "too many requests" in low or status_code == 429:
        return RateLimitedError(f"IEX Cloud: {short}", **ctx)
    if "api key" in low or "token" in low or "permission" in low or status_code in (401, 403):
        return EntitlementError(f"IEX Cloud: {short}", **ctx)
    if "invalid values" in low or status_code == 400:
        return ProviderError(f"IEX Cloud rejected the request: {short}", **ctx)
    return MalformedResponseError(f"IEX Cloud sent text instead of JSON: {short!r}", **ctx)


def _json_or_error(body: bytes | str, symbol: str) -> Any:
    text = text_of(body).strip()
    if text and text[0] not in "[{":
        raise classify_text(text, symbol)
    return load_json(text, NAME, symbol)


def chart_basis(body: bytes | str) -> PriceBasis:
    """Return the basis of the bars `parse_chart` makes of a chart body.

    Daily rows are raw when they carry `uClose` (the parser reads `uOpen..uVolume`); rows
    without it (older or trimmed responses) are split-adjusted as of the response. Minute
    rows are taken as raw.
    """
    raw = body if isinstance(body, bytes) else body.encode()
    if b'"minute"' in raw or b'"uClose"' in raw or b'"date"' not in raw:
        return PriceBasis.NONE
    return PriceBasis.SPLITS


@guarded(NAME)
def parse_chart(body: bytes | str, symbol: str) -> pl.DataFrame:
    """Parse a `/chart` body (daily rows or minute rows) into canonical raw bars."""
    rows = require(_json_or_error(body, symbol), list, "the chart", NAME, symbol)
    for row in rows:
        require(row, dict, "a chart row", NAME, symbol)
    if not rows:
        return finish_bars({}, symbol=symbol, timeframe="1d", provider=NAME)
    intraday = "minute" in rows[0]
    days = pl.Series("date", [r["date"] for r in rows], dtype=pl.String)
    if intraday:
        minutes = pl.Series("minute", [r["minute"] for r in rows], dtype=pl.String)
        ts = (
            (days.str.replace_all("-", "") + " " + minutes)
            .str.to_datetime("%Y%m%d %H:%M", time_unit="us", strict=True)
            .dt.replace_time_zone(EXCHANGE_TZ, ambiguous="earliest", non_existent="raise")
            .dt.convert_time_zone("UTC")
        )
    else:
        ts = days.str.to_date("%Y-%m-%d", strict=True)
    raw = not intraday and "uClose" in rows[0]

    def col(name: str) -> pl.Series:
        key = "u" + name[0].upper() + name[1:] if raw else name
        return float_column(name, [r.get(key) for r in rows])

    columns: dict[str, pl.Series] = {"ts": ts.alias("ts")}
    columns |= {n: col(n) for n in ("open", "high", "low", "close", "volume")}
    if intraday:
        columns["vwap"] = float_column("vwap", [r.get("average") for r in rows])
        trades = float_column("trades", [r.get("numberOfTrades") for r in rows])
        columns["trades"] = trades.cast(pl.Int64, strict=True)
    return finish_bars(columns, symbol=symbol, timeframe="1m" if intraday else "1d", provider=NAME)


@guarded(NAME)
def parse_quote(body: bytes | str, symbol: str) -> Quote:
    """Parse a `/quote` body into a `Quote` (IEX bid/ask of 0 mean "no quote on IEX")."""
    data = require(_json_or_error(body, symbol), dict, "the quote", NAME, symbol)
    last = require(data.get("latestPrice"), (int, float), "latestPrice", NAME, symbol)
    stamp = require(data.get("latestUpdate"), int, "latestUpdate", NAME, symbol)

    def positive(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) and value > 0 else None

    bid, ask = positive("iexBidPrice"), positive("iexAskPrice")
    return Quote(
        symbol=str(data.get("symbol") or symbol),
        ts=datetime.fromtimestamp(stamp // 1000, tz=UTC) + timedelta(milliseconds=stamp % 1000),
        last=float(last),
        bid=bid,
        ask=ask,
        bid_size=positive("iexBidSize") if bid else None,
        ask_size=positive("iexAskSize") if ask else None,
        provider=NAME,
    )


class IexCloudProvider(HttpProvider):
    """IEX Cloud (retired upstream in 2024; see the module docstring); key in `token`."""

    name = NAME
    default_base_url = "https://cloud.iexapis.com"
    key_param = "token"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1m", "1d"}),
        price_basis=PriceBasis.NONE,
        history_start=date(2004, 1, 1),
        intraday_lookback_days=30,
        realtime=False,
        corporate_actions=False,
        requires_key=True,
        cost_per_call=0.0,
        priority=90,  # retired upstream: only compatible endpoints remain
        notes="service retired 2024-08-31; for compatible endpoints and replays",
    )

    def classify_status(
        self, response: httpx.Response, payload: RawPayload, symbol: str | None
    ) -> ProviderError | None:
        status = response.status_code
        if status >= 400 and status != 429 and status < 500:
            error = classify_text(self.error_detail(payload.body), symbol, status)
            error.url = payload.url
            error.context["url"] = payload.url
            return error
        return super().classify_status(response, payload, symbol)

    @classmethod
    def planned_calls(cls, request: BarRequest, bars: int, now: datetime) -> int:
        """Intraday: one call per calendar day; daily: one range call."""
        if request.timeframe.is_intraday:
            return (request.last_date - request.start_date).days + 1
        return 1

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        self.require_key()
        sym = request.symbol
        raw: list[RawPayload] = []
        parts: list[pl.DataFrame] = []
        metadata: dict[str, Any] = {}
        if request.timeframe.is_intraday:
            day = request.start_date
            while day <= request.last_date:
                path = f"/stable/stock/{path_part(sym)}/chart/date/{day:%Y%m%d}"
                _, payload = self.get(self.url(path), symbol=sym)
                raw.append(payload)
                parts.append(parse_chart(payload.body, sym))
                day += timedelta(days=1)
        else:
            age = (self.clock.now().date() - request.start_date).days
            rng = next((name for name, days in _RANGES if age <= days), "max")
            _, payload = self.get(
                self.url(f"/stable/stock/{path_part(sym)}/chart/{rng}"), symbol=sym
            )
            raw.append(payload)
            parts.append(parse_chart(payload.body, sym))
            basis = chart_basis(payload.body)
            if basis is not PriceBasis.NONE:  # the capabilities say NONE: say what this is
                metadata["price_basis"] = basis
        bars = pl.concat(parts).unique("ts", keep="last").sort("ts")
        tf = str(request.timeframe)
        if bars.height and bars["timeframe"][0] != tf:
            raise MalformedResponseError(
                f"IEX Cloud returned {bars['timeframe'][0]} bars for a {tf} request",
                provider=NAME,
                symbol=sym,
            )
        bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        return FetchResult(bars=bars, raw=raw, provider=NAME, metadata=metadata)

    def fetch_quote(self, symbol: str) -> Quote:
        """Return the latest quote of `symbol`."""
        self.require_key()
        _, payload = self.get(self.url(f"/stable/stock/{path_part(symbol)}/quote"), symbol=symbol)
        return parse_quote(payload.body, symbol)
