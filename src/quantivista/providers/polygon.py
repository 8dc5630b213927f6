"""`polygon`: Polygon.io (now Massive) aggregates and reference splits/dividends.

`/v2/aggs/ticker/{T}/range/{multiplier}/{timespan}/{from}/{to}` returns bars with epoch-ms
`t` at the start of each window; daily bars start 00:00 New York and are re-stamped 00:00 UTC
of that date. The client asks for `adjusted=false` (raw prices). Long ranges are truncated
with a `next_url` (absolute, without the key): the client follows it, re-adding the key.
Splits and dividends come from `/v3/reference/splits` and `/v3/reference/dividends`.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

import httpx
import polars as pl

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    RateLimitedError,
)
from quantivista.model.instruments import AssetClass
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.providers._parsing import (
    actions_frame,
    bars_of,
    empty_actions,
    finish_bars,
    float_column,
    guarded,
    load_json,
    local_dates_to_utc,
    require,
)
from quantivista.providers.base import (
    BarRequest,
    FetchResult,
    PriceBasis,
    ProviderCapabilities,
    RawPayload,
)
from quantivista.providers.http import HttpProvider, path_part

__all__ = ["PolygonProvider", "parse_aggs", "parse_dividends", "parse_splits"]

NAME = "polygon"
EXCHANGE_TZ = "America/New_York"
_TIMESPAN = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month"}
MAX_PAGES = 1000
PAGE_BARS = 50_000  # the aggregates endpoint's largest `limit`


def _check_status(data: dict[str, Any], symbol: str | None) -> None:
    status = str(data.get("status", "OK")).upper()
    if status in ("OK", "DELAYED"):
        return
    text = str(data.get("error") or data.get("message") or status)[:300]
    ctx: dict[str, Any] = {"provider": NAME, "symbol": symbol}
    if "maximum requests" in text.lower() or "exceeded" in text.lower():
        raise RateLimitedError(f"Polygon rate limit: {text}", retry_after_s=60.0, **ctx)
    if status == "NOT_AUTHORIZED" or "plan" in text.lower():
        raise EntitlementError(f"Polygon plan does not cover this: {text}", **ctx)
    raise MalformedResponseError(f"Polygon status {status}: {text}", **ctx)


def _next_url(data: dict[str, Any], symbol: str | None) -> str | None:
    nxt = data.get("next_url")
    if nxt is None or nxt == "":
        return None
    return require(nxt, str, "next_url", NAME, symbol)  # type: ignore[no-any-return]


@guarded(NAME)
def parse_aggs(
    body: bytes | str, symbol: str, timeframe: TimeframeLike = "1d"
) -> tuple[pl.DataFrame, str | None]:
    """Parse one aggregates page into canonical bars and the `next_url` (None on the last)."""
    data = require(load_json(body, NAME, symbol), dict, "the body", NAME, symbol)
    _check_status(data, symbol)
    tf = Timeframe.parse(timeframe)
    nxt = _next_url(data, symbol)
    results = data.get("results")
    if results is None:  # Polygon omits `results` when there is no data
        return finish_bars({}, symbol=symbol, timeframe=tf, provider=NAME), nxt
    rows = require(results, list, "results", NAME, symbol)
    if not all(type(row) is dict for row in rows):
        for row in rows:
            require(row, dict, "a result", NAME, symbol)
    if not rows:
        return finish_bars({}, symbol=symbol, timeframe=tf, provider=NAME), nxt
    fast = _typed_rows(rows)
    if fast is None:  # strings, booleans, missing keys...: the checked path decides
        return _checked_rows(rows, symbol, tf), nxt
    ts = pl.from_epoch(pl.col("t"), time_unit="ms").dt.replace_time_zone("UTC")
    if not tf.is_intraday:
        ts = local_dates_to_utc(ts, EXCHANGE_TZ)
    columns = fast.lazy().select(
        ts.alias("ts"), *(pl.col(key).alias(name) for key, name in _AGG_NAMES.items())
    )
    return bars_of(columns, symbol=symbol, timeframe=tf, provider=NAME), nxt


# the wire's keys -> canonical columns; the fast path's types (JSON numbers only)
_AGG_NAMES = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap",
              "n": "trades"}  # fmt: skip
_AGG_SCHEMA = {"t": pl.Int64, "o": pl.Float64, "h": pl.Float64, "l": pl.Float64,
               "c": pl.Float64, "v": pl.Float64, "vw": pl.Float64, "n": pl.Int64}  # fmt: skip
_AGG_REQUIRED = frozenset({"t", "o", "h", "l", "c", "v"})


def _typed_rows(rows: list[dict[str, Any]]) -> pl.DataFrame | None:
    """Return the rows as one typed frame when every value is a plain JSON number (`t` and
    `n` integers; one pass in polars instead of a column at a time); None when a row needs
    the checked path: a string, a boolean, a null or another key, a missing required key.
    Polars would read a boolean as 0/1 or a float as an integer without a word: the types
    are checked here first."""
    kinds = {type(value) for row in rows for value in row.values()}
    if not kinds <= _NUMBER or not all(
        row.keys() >= _AGG_REQUIRED and type(row["t"]) is int and type(row.get("n", 0)) is int
        for row in rows
    ):  # (one pass over the values, one over the rows)
        return None
    try:
        frame = pl.DataFrame(rows, schema=_AGG_SCHEMA, strict=True)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
        return None  # an integer beyond 64 bits
    _epochs(frame["t"])
    return frame


# the bar times a vendor may send (epoch ms): years 1900 to 2200
_EPOCH_MS = (-2_208_988_800_000, 7_258_118_400_000)


def _epochs(t: pl.Series) -> pl.Series:
    """Return the epoch-ms column, refusing times no market had (polars would panic on some
    of them while converting time zones)."""
    if not t.is_between(*_EPOCH_MS).all():
        raise MalformedResponseError(
            "Polygon bar time out of range (years 1900 to 2200)", provider=NAME
        )
    return t


_NUMBER = frozenset({int, float})  # a null anywhere: the checked path


def _checked_rows(rows: list[dict[str, Any]], symbol: str, tf: Timeframe) -> pl.DataFrame:
    """Build the bars a column at a time, refusing what is not a number (the slow path)."""
    epoch = _epochs(pl.Series("t", [r["t"] for r in rows], dtype=pl.Int64, strict=True))
    ts = pl.select(
        pl.from_epoch(pl.lit(epoch), time_unit="ms").dt.replace_time_zone("UTC")
    ).to_series()
    if not tf.is_intraday:
        ts = pl.select(local_dates_to_utc(pl.lit(ts), EXCHANGE_TZ)).to_series()
    names = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}
    columns: dict[str, pl.Series] = {"ts": ts.alias("ts")}
    for key, name in names.items():
        columns[name] = float_column(name, [r[key] for r in rows])
    columns["vwap"] = float_column("vwap", [r.get("vw") for r in rows])
    trades = float_column("trades", [r.get("n") for r in rows])
    columns["trades"] = trades.cast(pl.Int64, strict=True)
    return finish_bars(columns, symbol=symbol, timeframe=tf, provider=NAME)


@guarded(NAME)
def parse_splits(body: bytes | str, symbol: str | None = None) -> tuple[pl.DataFrame, str | None]:
    """Parse `/v3/reference/splits` into canonical split actions (ratio = split_to/split_from)."""
    data = require(load_json(body, NAME, symbol), dict, "the body", NAME, symbol)
    _check_status(data, symbol)
    rows = require(data.get("results") or [], list, "results", NAME, symbol)
    for row in rows:
        require(row, dict, "a result", NAME, symbol)
    if not rows:
        return empty_actions(), _next_url(data, symbol)
    split_to = float_column("to", [r["split_to"] for r in rows])
    split_from = float_column("from", [r["split_from"] for r in rows])
    if bool(((split_from <= 0) | (split_to <= 0)).any()):
        raise MalformedResponseError("Polygon split with a non-positive side", provider=NAME)
    frame: dict[str, Any] = {
        "symbol": pl.Series([r.get("ticker") or symbol for r in rows], dtype=pl.String),
        "action_type": ["split"] * len(rows),
        "ex_date": pl.Series([r["execution_date"] for r in rows], dtype=pl.String),
        "ratio": split_to / split_from,
    }
    return actions_frame(frame, NAME), _next_url(data, symbol)


_DIVIDEND_TYPES = {"CD": "dividend", "SC": "special_dividend", "LT": "dividend", "ST": "dividend"}


@guarded(NAME)
def parse_dividends(
    body: bytes | str, symbol: str | None = None
) -> tuple[pl.DataFrame, str | None]:
    """Parse `/v3/reference/dividends` into canonical dividend actions (ex-date, cash amount).

    `dividend_type` SC (special cash) becomes `special_dividend`; CD/LT/ST are `dividend`.
    """
    data = require(load_json(body, NAME, symbol), dict, "the body", NAME, symbol)
    _check_status(data, symbol)
    rows = require(data.get("results") or [], list, "results", NAME, symbol)
    for row in rows:
        require(row, dict, "a result", NAME, symbol)
    if not rows:
        return empty_actions(), _next_url(data, symbol)
    kinds = [_DIVIDEND_TYPES.get(str(r.get("dividend_type", "CD")), "dividend") for r in rows]
    frame: dict[str, Any] = {
        "symbol": pl.Series([r.get("ticker") or symbol for r in rows], dtype=pl.String),
        "action_type": kinds,
        "ex_date": pl.Series([r["ex_dividend_date"] for r in rows], dtype=pl.String),
        "amount": float_column("amount", [r["cash_amount"] for r in rows]),
        "currency": pl.Series([r.get("currency") for r in rows], dtype=pl.String),
    }
    return actions_frame(frame, NAME), _next_url(data, symbol)


class PolygonProvider(HttpProvider):
    """Polygon.io aggregates over HTTP (key in the `apiKey` query parameter)."""

    name = NAME
    default_base_url = "https://api.polygon.io"
    key_param = "apiKey"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset({"1m", "5m", "15m", "30m", "1h", "1d", "1w", "1mo"}),
        price_basis=PriceBasis.NONE,
        history_start=date(2003, 9, 10),
        intraday_lookback_days=365 * 2,
        realtime=False,
        corporate_actions=True,
        requires_key=True,
        cost_per_call=0.0,
        priority=20,
        notes="free key: 5 calls/minute, 2 years of history; next_url pages count as calls",
    )

    def __init__(self, *, include_actions: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.include_actions = include_actions

    def _follow(self, url: str, symbol: str) -> str:
        # next_url is absolute on the real API; a relative one is taken against base_url, and
        # a real-host one is re-pointed at an overridden base_url (never leave the simulator)
        for real in (self.default_base_url, "https://api.massive.com"):
            if url.startswith(real + "/") and self.base_url != self.default_base_url:
                return self.base_url + url[len(real) :]
        return url if httpx.URL(url).is_absolute_url else self.url(url)

    @classmethod
    def planned_calls(cls, request: BarRequest, bars: int, now: datetime) -> int:
        """One aggregates page per `PAGE_BARS` bars (next_url pages count as calls)."""
        return max(1, math.ceil(bars / PAGE_BARS))

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        self.require_key()
        tf = request.timeframe
        sym = request.symbol
        path = (
            f"/v2/aggs/ticker/{path_part(sym)}/range/{tf.multiple}/{_TIMESPAN[tf.unit]}"
            f"/{request.start_date.isoformat()}/{request.last_date.isoformat()}"
        )
        params: dict[str, str] | None = {
            "adjusted": "false", "sort": "asc", "limit": str(PAGE_BARS)
        }  # fmt: skip
        url: str | None = self.url(path)
        seen: set[str] = set()
        parts: list[pl.DataFrame] = []
        raw: list[RawPayload] = []
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise MalformedResponseError("Polygon next_url loops", provider=NAME, symbol=sym)
            seen.add(url)
            _, payload = self.get(url, params, symbol=sym)
            raw.append(payload)
            bars, nxt = parse_aggs(payload.body, sym, tf)
            parts.append(bars)
            url = self._follow(nxt, sym) if nxt else None
            params = None  # next_url carries its own query (cursor); only the key is re-added
        pages = pl.concat(parts) if len(parts) > 1 else parts[0]  # one page: most requests
        bars = (
            pages.lazy()
            .unique("ts", keep="last")
            .sort("ts")
            .filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
            .collect()
        )  # one collect per request
        actions = empty_actions()
        if self.include_actions and not tf.is_intraday:
            actions, more = self.fetch_actions(sym, request.start_date, request.last_date)
            raw.extend(more)
        return FetchResult(bars=bars, actions=actions, raw=raw, provider=NAME)

    def fetch_actions(
        self, symbol: str, first: date, last: date
    ) -> tuple[pl.DataFrame, list[RawPayload]]:
        """Return the splits and dividends of `symbol` with ex-dates in `[first, last]`."""
        self.require_key()
        raw: list[RawPayload] = []
        frames: list[pl.DataFrame] = []
        for path, key, parse in (
            ("/v3/reference/splits", "execution_date", parse_splits),
            ("/v3/reference/dividends", "ex_dividend_date", parse_dividends),
        ):
            params: dict[str, str] | None = {
                "ticker": symbol, f"{key}.gte": first.isoformat(),
                f"{key}.lte": last.isoformat(), "limit": "1000",
            }  # fmt: skip
            url: str | None = self.url(path)
            pages = 0
            while url is not None and pages < MAX_PAGES:
                _, payload = self.get(url, params, symbol=symbol)
                raw.append(payload)
                frame, nxt = parse(payload.body, symbol)
                frames.append(frame)
                url = self._follow(nxt, symbol) if nxt else None
                params, pages = None, pages + 1
        actions = pl.concat(frames).filter(pl.col("symbol") == symbol)
        return actions.sort("ex_date", "action_type"), raw
