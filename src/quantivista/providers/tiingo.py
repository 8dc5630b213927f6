"""`tiingo`: Tiingo end-of-day prices (`/tiingo/daily/{ticker}/prices`) and IEX intraday.

Daily rows carry raw `open..volume` and CRSP-adjusted `adj*` columns plus `divCash` (on the
ex-date) and `splitFactor` (on the split date). The parser keeps the raw prices and turns the
last two into corporate actions. A daily `date` is a date label (`2015-01-02T00:00:00.000Z`,
older `+00:00`): its date part is the session date, never converted between zones. IEX
intraday rows (`/iex/{ticker}/prices`) are UTC bar starts, OHLC only unless volume is asked
for. Errors are JSON `{"detail": ...}` with 4xx, or (legacy) plain text with HTTP 200.
"""

from __future__ import annotations

import io
from datetime import date
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
)
from quantivista.providers.http import HttpProvider, path_part

__all__ = ["TiingoProvider", "parse_daily", "parse_daily_csv", "parse_intraday"]

NAME = "tiingo"
_RESAMPLE = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "1h": "1hour"}


def _raise_detail(text: str, symbol: str | None) -> None:
    low = text.lower()
    ctx: dict[str, Any] = {"provider": NAME, "symbol": symbol}
    short = text.strip()[:200]
    if "not found" in low or "does not exist" in low:
        raise SymbolNotFoundError(f"Tiingo: {short}", **ctx)
    if "run over" in low or "month" in low:
        raise QuotaExhaustedError(f"Tiingo quota: {short}", **ctx)
    if "limit" in low or "too many" in low:
        raise RateLimitedError(f"Tiingo rate limit: {short}", **ctx)
    if "permission" in low or "token" in low or "authoriz" in low:
        raise EntitlementError(f"Tiingo: {short}", **ctx)
    raise MalformedResponseError(f"Tiingo error: {short}", **ctx)


def _rows(body: bytes | str, symbol: str) -> list[dict[str, Any]]:
    text = text_of(body).strip()
    if text and text[0] not in "[{":
        _raise_detail(text, symbol)
    data = load_json(text, NAME, symbol)
    if isinstance(data, dict) and "detail" in data:
        _raise_detail(str(data["detail"]), symbol)
    rows = require(data, list, "the price list", NAME, symbol)
    return [require(r, dict, "a price row", NAME, symbol) for r in rows]


def _days(values: list[Any]) -> pl.Series:
    return (
        pl.Series("ts", values, dtype=pl.String)
        .str.slice(0, 10)
        .str.to_date("%Y-%m-%d", strict=True)
    )


def _daily(columns: dict[str, pl.Series], symbol: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    ts = columns["ts"]
    bars = finish_bars(
        {k: columns[k] for k in ("ts", "open", "high", "low", "close", "volume")},
        symbol=symbol,
        timeframe="1d",
        provider=NAME,
    )
    parts = []
    if "splitFactor" in columns:
        split = columns["splitFactor"]
        mask = split.is_not_null() & (split != 1.0) & (split > 0)
        parts.append(pl.DataFrame({"ex_date": ts.filter(mask), "ratio": split.filter(mask),
                                   "action_type": ["split"] * int(mask.sum())}))  # fmt: skip
    if "divCash" in columns:
        cash = columns["divCash"]
        mask = cash.is_not_null() & (cash > 0)
        parts.append(pl.DataFrame({"ex_date": ts.filter(mask), "amount": cash.filter(mask),
                                   "action_type": ["dividend"] * int(mask.sum())}))  # fmt: skip
    parts = [p for p in parts if p.height]
    if not parts:
        return bars, empty_actions()
    df = pl.concat(parts, how="diagonal_relaxed").with_columns(pl.lit(symbol).alias("symbol"))
    return bars, actions_frame(df.to_dict(as_series=True), NAME)


@guarded(NAME)
def parse_daily(body: bytes | str, symbol: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a daily prices JSON body into raw bars and split/dividend actions."""
    rows = _rows(body, symbol)
    if not rows:
        return finish_bars({}, symbol=symbol, timeframe="1d", provider=NAME), empty_actions()
    columns = {"ts": _days([r["date"] for r in rows])}
    for name in ("open", "high", "low", "close", "volume"):
        columns[name] = float_column(name, [r[name] for r in rows])
    for name in ("divCash", "splitFactor"):
        if name in rows[0]:
            columns[name] = float_column(name, [r.get(name) for r in rows])
    return _daily(columns, symbol)


@guarded(NAME)
def parse_daily_csv(body: bytes | str, symbol: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse a `format=csv` daily body (header `date,close,high,low,open,volume,...`)."""
    text = text_of(body).strip()
    if not text.lower().startswith("date,"):
        if text.startswith(("{", "[")):
            _rows(text, symbol)  # raises the detail error
        _raise_detail(text, symbol)
    df = pl.read_csv(io.StringIO(text), infer_schema=False)
    if df.is_empty():
        return finish_bars({}, symbol=symbol, timeframe="1d", provider=NAME), empty_actions()
    columns = {"ts": _days(df["date"].to_list())}
    for name in ("open", "high", "low", "close", "volume", "divCash", "splitFactor"):
        if name in df.columns:
            columns[name] = float_column(name, df[name].to_list())
    return _daily(columns, symbol)


@guarded(NAME)
def parse_intraday(body: bytes | str, symbol: str, timeframe: str = "1m") -> pl.DataFrame:
    """Parse an IEX intraday body (UTC ISO bar starts) into canonical bars."""
    rows = _rows(body, symbol)
    if not rows:
        return finish_bars({}, symbol=symbol, timeframe=timeframe, provider=NAME)
    ts = pl.Series("ts", [r["date"] for r in rows], dtype=pl.String).str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC", strict=True
    )
    columns: dict[str, pl.Series] = {"ts": ts}
    for name in ("open", "high", "low", "close", "volume"):
        columns[name] = float_column(name, [r.get(name) for r in rows])
    return finish_bars(columns, symbol=symbol, timeframe=timeframe, provider=NAME)


class TiingoProvider(HttpProvider):
    """Tiingo over HTTP (key in the `Authorization: Token ...` header)."""

    name = NAME
    default_base_url = "https://api.tiingo.com"
    key_header = "Authorization"
    key_header_prefix = "Token "
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1d", *_RESAMPLE}),
        price_basis=PriceBasis.NONE,
        history_start=date(1962, 1, 2),
        intraday_lookback_days=365 * 5,
        realtime=False,
        corporate_actions=True,
        requires_key=True,
        cost_per_call=0.0,
        priority=25,
        notes="free: about 50 calls/hour and 500 symbols/month; raw and adjusted columns",
    )

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        self.require_key()
        sym = request.symbol
        tf = str(request.timeframe)
        params = {
            "startDate": request.start_date.isoformat(),
            "endDate": request.last_date.isoformat(),
            "format": "json",
        }
        if tf == "1d":
            params["resampleFreq"] = "daily"
            _, payload = self.get(
                self.url(f"/tiingo/daily/{path_part(sym)}/prices"), params, symbol=sym
            )
            bars, actions = parse_daily(payload.body, sym)
        elif tf in _RESAMPLE:
            params |= {"resampleFreq": _RESAMPLE[tf], "columns": "open,high,low,close,volume"}
            _, payload = self.get(self.url(f"/iex/{path_part(sym)}/prices"), params, symbol=sym)
            bars, actions = parse_intraday(payload.body, sym, tf), empty_actions()
        else:
            raise EntitlementError(f"Tiingo has no {tf} bars", provider=NAME, symbol=sym)
        bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        actions = actions.filter(
            pl.col("ex_date").is_between(request.start_date, request.last_date)
        )
        return FetchResult(bars=bars, actions=actions, raw=[payload], provider=NAME)
