"""`stooq`: Stooq's CSV download (`/q/d/l/?s=aapl.us&i=d`), keyless (an optional key is sent
as `apikey`, which Stooq started asking for in 2026).

The CSV is `Date,Open,High,Low,Close[,Volume]`, ascending, date-only; prices are split- and
dividend-adjusted as of the download (not comparable to raw closes without re-basing), and
the parser returns them as they are: the capabilities declare `SPLITS_AND_DIVIDENDS` and
normalization (`processing.normalize.to_raw_basis`) turns them into raw prices. The
dividend factors are CRSP-style (`1 - D / C_prev`): on Stooq's SPY download of 2026-02-09
the steps at the 2018-2021 ex-dates match that convention and not Alpha Vantage's
(tests/processing/test_raw_basis.py). Stooq rounds prices to 3 decimals.
Every failure is HTTP 200 plain text or HTML: `Exceeded the daily hits limit` (quota),
`No data` (unknown symbol or empty range: Stooq does not say which), an API-key or
browser-check page. The header is checked before anything is parsed.
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
    SymbolNotFoundError,
)
from quantivista.model.instruments import AssetClass
from quantivista.providers._parsing import finish_bars, float_column, guarded, text_of
from quantivista.providers.base import (
    BarRequest,
    FetchResult,
    PriceBasis,
    ProviderCapabilities,
)
from quantivista.providers.http import HttpProvider

__all__ = ["StooqProvider", "parse_csv", "stooq_symbol"]

NAME = "stooq"
_INTERVAL = {"1d": "d", "1w": "w", "1mo": "m"}
_MARKETS = ("us", "uk", "de", "jp", "hk", "hu", "pl", "f")


def stooq_symbol(symbol: str) -> str:
    """Return Stooq's spelling: lower case, `.us` added unless a market suffix or index."""
    sym = symbol.strip().lower()
    if sym.startswith("^") or (sym.rsplit(".", 1)[-1] in _MARKETS and "." in sym):
        return sym
    return f"{sym}.us"


@guarded(NAME)
def parse_csv(body: bytes | str, symbol: str, timeframe: str = "1d") -> pl.DataFrame:
    """Parse a Stooq CSV download into canonical (adjusted) bars; text bodies raise."""
    text = text_of(body).lstrip("\ufeff").strip()
    low = text[:300].lower()
    ctx: dict[str, Any] = {"provider": NAME, "symbol": symbol}
    if "exceeded the daily hits limit" in low:
        raise QuotaExhaustedError("Stooq daily hits limit exceeded", **ctx)
    if low.startswith("no data"):
        raise SymbolNotFoundError("Stooq has no data for this symbol and range", **ctx)
    if low.startswith("<") or "apikey" in low or "<html" in low:
        raise EntitlementError("Stooq answered with a page (API key or browser check)", **ctx)
    if not text:
        raise MalformedResponseError("Stooq sent an empty body", **ctx)
    header = text.split("\n", 1)[0].strip().lower()
    if not header.startswith("date,open,high,low,close"):
        raise MalformedResponseError(f"Stooq CSV has an unexpected header: {header[:80]!r}", **ctx)
    df = pl.read_csv(io.StringIO(text), infer_schema=False)
    df = df.rename({c: c.strip().lower() for c in df.columns})
    if df.is_empty():
        return finish_bars({}, symbol=symbol, timeframe=timeframe, provider=NAME)
    columns: dict[str, pl.Series] = {
        "ts": df["date"].str.strip_chars().str.to_date("%Y-%m-%d", strict=True).alias("ts")
    }
    for name in ("open", "high", "low", "close"):
        columns[name] = float_column(name, df[name].to_list())
    volume = df["volume"].to_list() if "volume" in df.columns else [None] * df.height
    columns["volume"] = float_column("volume", volume)
    return finish_bars(columns, symbol=symbol, timeframe=timeframe, provider=NAME)


class StooqProvider(HttpProvider):
    """Stooq CSV downloads over HTTP (no key needed; an optional key goes in `apikey`)."""

    name = NAME
    default_base_url = "https://stooq.com"
    key_param = "apikey"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset(_INTERVAL),
        price_basis=PriceBasis.SPLITS_AND_DIVIDENDS,
        dividend_convention="crsp",
        history_start=date(1970, 1, 2),
        realtime=False,
        corporate_actions=False,
        requires_key=False,
        cost_per_call=0.0,
        priority=60,
        notes="best effort: daily hit cap, HTML walls since 2026; prices split- and dividend-"
        "adjusted (CRSP-style dividend factors) as of the download",
    )

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        tf = str(request.timeframe)
        if tf not in _INTERVAL:
            raise EntitlementError(f"Stooq has no {tf} bars", provider=NAME, symbol=request.symbol)
        params = {
            "s": stooq_symbol(request.symbol),
            "i": _INTERVAL[tf],
            "d1": f"{request.start_date:%Y%m%d}",
            "d2": f"{request.last_date:%Y%m%d}",
        }
        _, payload = self.get(self.url("/q/d/l/"), params, symbol=request.symbol)
        bars = parse_csv(payload.body, request.symbol, tf)
        bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        return FetchResult(bars=bars, raw=[payload], provider=NAME)
