"""`alpha_vantage`: Alpha Vantage's `/query` API (daily, daily adjusted, intraday, quote).

Alpha Vantage signals errors and limits with HTTP 200 and a JSON body keyed `Note`,
`Information` or `Error Message`; `classify_message` maps those texts onto the error tree.
Numbers are strings, rows are keyed by date (order not guaranteed), timestamps are naive
US/Eastern. Daily bars are stamped 00:00 UTC of the session date; intraday bars are taken as
bar starts (the 2023+ API labels 09:30...15:45 for 15-minute bars) and converted to UTC.

TIME_SERIES_DAILY_ADJUSTED gives raw OHLCV plus the dividend amount and split coefficient of
each day: the client keeps the raw bars and turns those columns into corporate actions. It is
a premium endpoint on free keys today, so the client falls back to TIME_SERIES_DAILY (raw,
no actions) once it is told so. Intraday is requested with `adjusted=false` so bars do not
drift with every later dividend.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    QuotaExhaustedError,
    RateLimitedError,
    SymbolNotFoundError,
)
from quantivista.model.instruments import AssetClass
from quantivista.model.ticks import Quote
from quantivista.model.timeframe import Timeframe
from quantivista.providers._parsing import (
    actions_frame,
    empty_actions,
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
from quantivista.providers.http import HttpProvider

__all__ = [
    "AlphaVantageProvider",
    "classify_message",
    "parse_global_quote",
    "parse_time_series",
    "parse_time_series_csv",
]

NAME = "alpha_vantage"
EXCHANGE_TZ = "America/New_York"
_INTERVALS = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "1h": "60min"}
_TF_OF_INTERVAL = {v: k for k, v in _INTERVALS.items()}
_ERROR_KEYS = ("Error Message", "Information", "Note")


def classify_message(data: Any, symbol: str | None = None) -> None:
    """Raise the error an HTTP-200 `Note`/`Information`/`Error Message` body means.

    Burst limit -> RateLimitedError (1 s), per-minute note (legacy) -> RateLimitedError (60 s),
    25/day cap -> QuotaExhaustedError, premium -> EntitlementError, invalid call or symbol ->
    SymbolNotFoundError, bad key -> EntitlementError. Returns quietly for other bodies.
    """
    if not isinstance(data, dict):
        return
    for key in _ERROR_KEYS:
        if key not in data:
            continue
        text = str(data[key])
        low = text.lower()
        ctx: dict[str, Any] = {"provider": NAME, "symbol": symbol}
        short = text[:200]
        if "per second" in low or "spreading out" in low:
            raise RateLimitedError(f"Alpha Vantage burst limit: {short}", retry_after_s=1.0, **ctx)
        if "per minute" in low or "call frequency" in low:
            raise RateLimitedError(f"Alpha Vantage rate limit: {short}", retry_after_s=60.0, **ctx)
        if "per day" in low or "daily rate limit" in low:
            raise QuotaExhaustedError(f"Alpha Vantage daily quota used up: {short}", **ctx)
        if "premium" in low:
            raise EntitlementError(f"Alpha Vantage premium feature: {short}", **ctx)
        if "apikey" in low or "api key" in low:
            raise EntitlementError(f"Alpha Vantage rejected the API key: {short}", **ctx)
        if key == "Error Message":
            raise SymbolNotFoundError(f"Alpha Vantage invalid call or symbol: {short}", **ctx)
        raise MalformedResponseError(f"Alpha Vantage message instead of data: {short}", **ctx)


def _series_key(data: dict[str, Any]) -> tuple[str, str]:
    for key in data:
        if key.startswith("Time Series") or key.endswith("Time Series"):
            if "Daily" in key:
                return key, "1d"
            if "Weekly" in key:
                return key, "1w"
            if "Monthly" in key:
                return key, "1mo"
            interval = key[key.find("(") + 1 : key.rfind(")")]
            if interval in _TF_OF_INTERVAL:
                return key, _TF_OF_INTERVAL[interval]
            raise MalformedResponseError(f"unknown Alpha Vantage series {key!r}", provider=NAME)
    raise MalformedResponseError(
        "Alpha Vantage response has no time series", provider=NAME, keys=sorted(data)[:10]
    )


def _field(key: str) -> str:
    return key.split(". ", 1)[-1].strip().lower()


def _actions(
    symbol: str, days: pl.Series, dividend: pl.Series | None, split: pl.Series | None
) -> pl.DataFrame:
    frames: list[pl.DataFrame] = []
    if split is not None:
        mask = split.is_not_null() & (split != 1.0) & (split > 0)
        frames.append(
            pl.DataFrame({"ex_date": days.filter(mask), "ratio": split.filter(mask)}).with_columns(
                pl.lit("split").alias("action_type"), pl.lit(None, pl.Float64).alias("amount")
            )
        )
    if dividend is not None:
        mask = dividend.is_not_null() & (dividend > 0)
        frames.append(
            pl.DataFrame(
                {"ex_date": days.filter(mask), "amount": dividend.filter(mask)}
            ).with_columns(
                pl.lit("dividend").alias("action_type"), pl.lit(None, pl.Float64).alias("ratio")
            )
        )
    if not frames:
        return empty_actions()
    df = pl.concat(frames, how="diagonal").with_columns(pl.lit(symbol).alias("symbol"))
    return actions_frame(df.to_dict(as_series=True), NAME)


def _timestamps(values: list[str], intraday: bool, tz: str) -> pl.Series:
    raw = pl.Series("ts", values, dtype=pl.String).str.strip_chars()
    if not intraday:
        return raw.str.to_date("%Y-%m-%d", strict=True)
    parsed = raw.str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=True)
    local = parsed.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="raise")
    return local.dt.convert_time_zone("UTC")


@guarded(NAME)
def parse_time_series(body: bytes | str, symbol: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a TIME_SERIES_* JSON body into canonical bars and corporate actions.

    The timeframe comes from the series key (`Time Series (Daily)`, `Time Series (5min)`).
    Actions are non-empty only for the adjusted daily series.
    """
    data = load_json(body, NAME, symbol)
    classify_message(data, symbol)
    require(data, dict, "the body", NAME, symbol)
    key, tf = _series_key(data)
    rows = require(data[key], dict, f"{key!r}", NAME, symbol)
    meta = data.get("Meta Data") or {}
    tz = EXCHANGE_TZ
    if isinstance(meta, dict):
        for mkey, value in meta.items():
            if _field(mkey) == "time zone" and isinstance(value, str) and value:
                tz = value
    if not rows:
        return finish_bars({}, symbol=symbol, timeframe=tf, provider=NAME), empty_actions()
    days = list(rows)
    values = list(rows.values())
    first = require(values[0], dict, "a bar", NAME, symbol)
    keys = {_field(k): k for k in first}
    for name in ("open", "high", "low", "close", "volume"):
        if name not in keys:
            raise MalformedResponseError(
                f"Alpha Vantage bar lacks {name!r}", provider=NAME, symbol=symbol
            )

    def col(name: str) -> pl.Series:
        raw_key = keys[name]
        return float_column(name, [row[raw_key] for row in values])

    intraday = Timeframe.parse(tf).is_intraday
    ts = _timestamps(days, intraday, tz)
    columns = {"ts": ts, **{n: col(n) for n in ("open", "high", "low", "close", "volume")}}
    bars = finish_bars(columns, symbol=symbol, timeframe=tf, provider=NAME)
    if bars["ts"].is_duplicated().any():
        raise MalformedResponseError(
            "Alpha Vantage repeated a timestamp", provider=NAME, symbol=symbol
        )
    actions = empty_actions()
    if not intraday and ("dividend amount" in keys or "split coefficient" in keys):
        dividend = col("dividend amount") if "dividend amount" in keys else None
        split = col("split coefficient") if "split coefficient" in keys else None
        actions = _actions(symbol, ts, dividend, split)
    return bars, actions


@guarded(NAME)
def parse_time_series_csv(body: bytes | str, symbol: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a `datatype=csv` TIME_SERIES_* body (newest first, CRLF) into bars and actions.

    Errors still come as JSON with `datatype=csv`, so a body starting with `{` is classified.
    """
    text = text_of(body).lstrip("\ufeff")
    if text.lstrip().startswith("{"):
        parse_time_series(text, symbol)  # raises the classified error, or parses JSON bars
        raise MalformedResponseError("expected CSV, got JSON", provider=NAME, symbol=symbol)
    header = text.lstrip().split("\n", 1)[0].strip().lower()
    if not header.startswith("timestamp,open,high,low,close"):
        raise MalformedResponseError(
            f"Alpha Vantage CSV has an unexpected header: {header[:80]!r}",
            provider=NAME,
            symbol=symbol,
        )
    df = pl.read_csv(io.StringIO(text.strip()), infer_schema=False)
    df = df.rename({c: c.strip().lower() for c in df.columns})
    if df.is_empty():
        return finish_bars({}, symbol=symbol, timeframe="1d", provider=NAME), empty_actions()
    stamps = df["timestamp"].str.strip_chars()
    intraday = bool((stamps.str.len_chars() > 10).any())
    if intraday:
        deltas = _timestamps(stamps.to_list(), True, EXCHANGE_TZ).sort().diff().drop_nulls()
        minutes = int(deltas.min().total_seconds() // 60) if len(deltas) else 1  # type: ignore[union-attr]
        tf = {1: "1m", 5: "5m", 15: "15m", 30: "30m", 60: "1h"}.get(minutes)
        if tf is None:
            raise MalformedResponseError(
                f"cannot tell the interval of Alpha Vantage CSV bars ({minutes} min)",
                provider=NAME,
                symbol=symbol,
            )
    else:
        tf = "1d"
    ts = _timestamps(stamps.to_list(), intraday, EXCHANGE_TZ)

    def col(name: str) -> pl.Series:
        return float_column(name, df[name].to_list())

    columns = {"ts": ts, **{n: col(n) for n in ("open", "high", "low", "close", "volume")}}
    bars = finish_bars(columns, symbol=symbol, timeframe=tf, provider=NAME)
    actions = empty_actions()
    if not intraday and ("dividend_amount" in df.columns or "split_coefficient" in df.columns):
        dividend = col("dividend_amount") if "dividend_amount" in df.columns else None
        split = col("split_coefficient") if "split_coefficient" in df.columns else None
        actions = _actions(symbol, ts, dividend, split)
    return bars, actions


@guarded(NAME)
def parse_global_quote(body: bytes | str, symbol: str) -> Quote:
    """Parse a GLOBAL_QUOTE body into a `Quote` (last price, stamped at the trading day)."""
    data = load_json(body, NAME, symbol)
    classify_message(data, symbol)
    require(data, dict, "the body", NAME, symbol)
    quote = require(data.get("Global Quote"), dict, "'Global Quote'", NAME, symbol)
    if not quote:
        raise SymbolNotFoundError(
            "Alpha Vantage has no quote for the symbol", provider=NAME, symbol=symbol
        )
    fields = {_field(k): v for k, v in quote.items()}
    day = date.fromisoformat(str(fields["latest trading day"]).strip())
    price = float(str(fields["price"]))
    return Quote(
        symbol=str(fields.get("symbol") or symbol),
        ts=datetime(day.year, day.month, day.day, tzinfo=UTC),
        last=price if price > 0 else None,
        provider=NAME,
    )


class AlphaVantageProvider(HttpProvider):
    """Alpha Vantage over HTTP (key in the `apikey` query parameter)."""

    name = NAME
    default_base_url = "https://www.alphavantage.co"
    key_param = "apikey"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1m", "5m", "15m", "30m", "1h", "1d"}),
        price_basis=PriceBasis.NONE,
        history_start=date(1999, 11, 1),
        intraday_lookback_days=365 * 20,
        realtime=False,
        corporate_actions=True,
        requires_key=True,
        cost_per_call=0.0,
        priority=30,
        notes="free key: 25 calls/day and 1/s; DAILY_ADJUSTED and outputsize=full may be premium",
    )
    COMPACT_DAYS = 130  # 100 trading days, with room for holidays

    def __init__(self, *, daily_function: str = "TIME_SERIES_DAILY_ADJUSTED", **kw: Any) -> None:
        super().__init__(**kw)
        self.daily_function = daily_function

    def query(self, params: dict[str, str], symbol: str) -> RawPayload:
        """Call `/query` with `params` (the key is added by the base class)."""
        self.require_key()
        _, payload = self.get(self.url("/query"), params, symbol=symbol)
        return payload

    @classmethod
    def planned_calls(cls, request: BarRequest, bars: int, now: datetime) -> int:
        """Intraday: one call per month; daily: one call returns the whole history."""
        if request.timeframe.is_intraday:
            return len(_months(request.start, request.end))
        return 1

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        tf = str(request.timeframe)
        if not self.capabilities.supports(tf):
            raise EntitlementError(
                f"Alpha Vantage has no {tf} bars", provider=NAME, symbol=request.symbol
            )
        raw: list[RawPayload] = []
        if request.timeframe.is_intraday:
            bars_parts = []
            for month in _months(request.start, request.end):
                params = {
                    "function": "TIME_SERIES_INTRADAY",
                    "symbol": request.symbol,
                    "interval": _INTERVALS[tf],
                    "month": month,
                    "outputsize": "full",
                    "adjusted": "false",
                    "extended_hours": "false",
                }
                payload = self.query(params, request.symbol)
                raw.append(payload)
                bars_parts.append(parse_time_series(payload.body, request.symbol)[0])
            bars = pl.concat(bars_parts).unique("ts", keep="last").sort("ts")
            actions = empty_actions()
        else:
            bars, actions, payloads = self._daily(request)
            raw.extend(payloads)
        bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        actions = actions.filter(
            pl.col("ex_date").is_between(request.start_date, request.last_date)
        )
        return FetchResult(bars=bars, actions=actions, raw=raw, provider=NAME)

    def _daily(self, request: BarRequest) -> tuple[pl.DataFrame, pl.DataFrame, list[RawPayload]]:
        recent = request.start >= self.clock.now() - timedelta(days=self.COMPACT_DAYS)
        params = {
            "function": self.daily_function,
            "symbol": request.symbol,
            "outputsize": "compact" if recent else "full",
        }
        payload = self.query(params, request.symbol)
        try:
            bars, actions = parse_time_series(payload.body, request.symbol)
        except EntitlementError:
            if self.daily_function == "TIME_SERIES_DAILY":
                raise
            self.daily_function = "TIME_SERIES_DAILY"  # premium on this key: stop asking
            bars, actions, more = self._daily(request)
            return bars, actions, [payload, *more]
        return bars, actions, [payload]

    def fetch_quote(self, symbol: str) -> Quote:
        """Return the GLOBAL_QUOTE of `symbol`."""
        payload = self.query({"function": "GLOBAL_QUOTE", "symbol": symbol}, symbol)
        return parse_global_quote(payload.body, symbol)


def _months(start: datetime, end: datetime) -> list[str]:
    last = (end - timedelta(microseconds=1)).astimezone(UTC)
    year, month = start.astimezone(UTC).year, start.astimezone(UTC).month
    out: list[str] = []
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out
