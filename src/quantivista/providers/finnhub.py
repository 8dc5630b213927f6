"""`finnhub`: Finnhub candles and quote over REST, trades over WebSocket.

REST (`/api/v1/stock/candle`, `/api/v1/quote`, key in the `X-Finnhub-Token` header): candles
are parallel arrays with epoch-second `t`; daily candles start 00:00 New York and are
re-stamped 00:00 UTC of that date. An empty range is HTTP 200 `{"s":"no_data"}`; an unknown
symbol's quote is HTTP 200 with all zeros; candles are premium (403 on free keys).
Daily (and weekly, monthly) candles are split-adjusted as of the request per Finnhub's docs,
intraday ones are not; the parser returns both as they are and the capabilities say so
(`price_basis=SPLITS`, `intraday_price_basis=NONE`) for normalization to undo.

WebSocket (`wss://ws.finnhub.io?token=...`): `FinnhubTradeStream` subscribes to symbols,
yields `Trade`s, treats Finnhub's `{"type":"ping"}` messages as a heartbeat (reconnects when
nothing arrives for `heartbeat_timeout_s`), reconnects with backoff after a drop, subscribes
again after every reconnect, and drops duplicate deliveries (same symbol, ms, price, size).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import polars as pl

from quantivista.errors import (
    EntitlementError,
    MalformedResponseError,
    RateLimitedError,
    SymbolNotFoundError,
    TransientProviderError,
)
from quantivista.model.instruments import AssetClass
from quantivista.model.ticks import Quote, Trade
from quantivista.model.timeframe import Timeframe, TimeframeLike
from quantivista.providers._parsing import (
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
)
from quantivista.providers.http import HttpProvider

__all__ = [
    "TRADE_POLARS_SCHEMA",
    "FinnhubProvider",
    "FinnhubTradeStream",
    "parse_candles",
    "parse_quote",
    "parse_trade_frame",
    "parse_trade_message",
    "trades_frame",
]

NAME = "finnhub"
EXCHANGE_TZ = "America/New_York"
_RESOLUTION = {"1m": "1", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "1d": "D", "1w": "W"}
_RESOLUTION |= {"1mo": "M"}
TRADE_POLARS_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "ts": pl.Datetime("us", "UTC"),
        "price": pl.Float64(),
        "size": pl.Float64(),
        "provider": pl.String(),
    }
)


def _raise_error_body(data: Any, symbol: str | None) -> None:
    if not isinstance(data, dict) or "error" not in data:
        return
    text = str(data["error"])[:300]
    low = text.lower()
    if "limit" in low:
        raise RateLimitedError(f"Finnhub: {text}", retry_after_s=60.0, provider=NAME, symbol=symbol)
    if "access" in low or "premium" in low or "token" in low:
        raise EntitlementError(f"Finnhub: {text}", provider=NAME, symbol=symbol)
    if "symbol" in low:
        raise SymbolNotFoundError(f"Finnhub: {text}", provider=NAME, symbol=symbol)
    raise MalformedResponseError(f"Finnhub error: {text}", provider=NAME, symbol=symbol)


@guarded(NAME)
def parse_candles(body: bytes | str, symbol: str, timeframe: TimeframeLike = "1d") -> pl.DataFrame:
    """Parse a `/stock/candle` body into canonical bars (`no_data` gives an empty frame)."""
    data = require(load_json(body, NAME, symbol), dict, "the body", NAME, symbol)
    _raise_error_body(data, symbol)
    tf = Timeframe.parse(timeframe)
    status = data.get("s")
    if status == "no_data":
        return finish_bars({}, symbol=symbol, timeframe=tf, provider=NAME)
    if status != "ok":
        raise MalformedResponseError(
            f"Finnhub candle status {status!r}", provider=NAME, symbol=symbol
        )
    stamps = require(data.get("t"), list, "t", NAME, symbol)
    cols: dict[str, pl.Series] = {}
    for key, name in (("o", "open"), ("h", "high"), ("l", "low"), ("c", "close"), ("v", "volume")):
        values = require(data.get(key), list, key, NAME, symbol)
        if len(values) != len(stamps):
            raise MalformedResponseError(
                f"Finnhub {key!r} has {len(values)} values for {len(stamps)} timestamps",
                provider=NAME,
                symbol=symbol,
            )
        cols[name] = float_column(name, values)
    epoch = pl.Series("t", stamps, dtype=pl.Int64, strict=True)
    ts = pl.from_epoch(pl.lit(epoch), time_unit="s").dt.replace_time_zone("UTC")
    if not tf.is_intraday:
        ts = local_dates_to_utc(ts, EXCHANGE_TZ)
    cols["ts"] = pl.select(ts.alias("ts")).to_series()
    return finish_bars(cols, symbol=symbol, timeframe=tf, provider=NAME)


@guarded(NAME)
def parse_quote(body: bytes | str, symbol: str) -> Quote:
    """Parse a `/quote` body; the all-zero answer for unknown symbols raises SymbolNotFound."""
    data = require(load_json(body, NAME, symbol), dict, "the body", NAME, symbol)
    _raise_error_body(data, symbol)
    last = data.get("c")
    stamp = data.get("t")
    require(last, (int, float), "c", NAME, symbol)
    require(stamp, int, "t", NAME, symbol)
    if not last or not stamp:
        raise SymbolNotFoundError("Finnhub has no quote (all zeros)", provider=NAME, symbol=symbol)
    return Quote(
        symbol=symbol,
        ts=datetime.fromtimestamp(stamp, tz=UTC),
        last=float(last),
        provider=NAME,
    )


@guarded(NAME)
def parse_trade_message(body: bytes | str, symbol: str | None = None) -> list[Trade]:
    """Parse one WebSocket message: trades for `type: trade`, nothing for `ping`.

    `{"type":"error","msg":...}` raises a ProviderError; unknown types are malformed.
    """
    data = require(load_json(body, NAME, symbol), dict, "the message", NAME, symbol)
    kind = data.get("type")
    if kind == "ping":
        return []
    if kind == "error":
        _raise_error_body({"error": data.get("msg", "")}, symbol)
    if kind != "trade":
        raise MalformedResponseError(f"unknown Finnhub message type {kind!r}", provider=NAME)
    items = require(data.get("data"), list, "data", NAME, symbol)
    trades = []
    for item in items:
        require(item, dict, "a trade", NAME, symbol)
        stamp = require(item["t"], int, "t", NAME, symbol)
        conditions = item.get("c") or []
        require(conditions, list, "c", NAME, symbol)
        trades.append(
            Trade(
                symbol=str(require(item["s"], str, "s", NAME, symbol)),
                ts=datetime.fromtimestamp(stamp // 1000, tz=UTC)
                + timedelta(milliseconds=stamp % 1000),
                price=float(require(item["p"], (int, float), "p", NAME, symbol)),
                size=float(require(item["v"], (int, float), "v", NAME, symbol)),
                conditions=tuple(str(c) for c in conditions),
                provider=NAME,
            )
        )
    return trades


def trades_frame(trades: Iterable[Trade]) -> pl.DataFrame:
    """Return trades as a polars frame (symbol, ts UTC, price, size, provider)."""
    items = list(trades)
    return pl.DataFrame(
        {
            "symbol": [t.symbol for t in items],
            "ts": [t.ts for t in items],
            "price": [t.price for t in items],
            "size": [t.size for t in items],
            "provider": [t.provider for t in items],
        },
        schema=TRADE_POLARS_SCHEMA,
    )


_MAX_MS = 253_402_300_800_000  # 9999-12-31: past it, an epoch is not a trade time


def _column(items: list[Any], key: str, dtype: pl.DataType) -> pl.Series:
    """One field of every trade as a typed column (strict: a wrong type raises)."""
    column = pl.Series(key, [item[key] for item in items], dtype=dtype, strict=True)
    if column.null_count():
        raise MalformedResponseError(f"a Finnhub trade has a null {key!r}", provider=NAME)
    return column


@guarded(NAME)
def parse_trade_frame(body: bytes | str, symbol: str | None = None) -> pl.DataFrame:
    """Parse one WebSocket message straight into a trade frame (`TRADE_POLARS_SCHEMA`).

    The hot path of the live feed: columns are built from the decoded message, with no
    Python object per trade (10x less work than `parse_trade_message` + `trades_frame`).
    Same contract: a ping is an empty frame; error messages and bad shapes raise.
    """
    data = require(orjson.loads(body), dict, "the message", NAME, symbol)
    kind = data.get("type")
    if kind == "ping":
        return pl.DataFrame(schema=TRADE_POLARS_SCHEMA)
    if kind == "error":
        _raise_error_body({"error": data.get("msg", "")}, symbol)
    if kind != "trade":
        raise MalformedResponseError(f"unknown Finnhub message type {kind!r}", provider=NAME)
    items = require(data.get("data"), list, "data", NAME, symbol)
    stamps = _column(items, "t", pl.Int64())
    if not stamps.is_between(0, _MAX_MS).all():
        raise MalformedResponseError("a Finnhub trade time is out of range", provider=NAME)
    return pl.DataFrame(
        {
            "symbol": _column(items, "s", pl.String()),
            "ts": stamps.cast(pl.Datetime("ms", "UTC")).cast(pl.Datetime("us", "UTC")),
            "price": _column(items, "p", pl.Float64()),
            "size": _column(items, "v", pl.Float64()),
            "provider": pl.Series([NAME] * len(items), dtype=pl.String()),
        },
        schema=TRADE_POLARS_SCHEMA,
    )


class _Seen:
    """Trades already yielded, by a hash of (symbol, ts, price, size): two generations of
    sets, so memory stays bounded and the last `window/2` to `window` trades are known."""

    def __init__(self, window: int) -> None:
        self.half = max(window // 2, 1)
        self.new: set[int] = set()
        self.old: set[int] = set()

    def fresh(self, frame: pl.DataFrame) -> pl.Series:
        """Return the mask of rows not seen before (nor earlier in `frame`); remember them."""
        keys = frame.select(pl.struct("symbol", "ts", "price", "size").hash(7)).to_series()
        first = keys.is_first_distinct()
        new, old = self.new, self.old
        seen = [k in new or k in old for k in keys.to_list()]  # set lookups, no objects
        mask = first & ~pl.Series(seen, dtype=pl.Boolean)
        new.update(keys.filter(mask).to_list())
        if len(new) >= self.half:
            self.old, self.new = new, set()
        return mask


class FinnhubTradeStream:
    """Finnhub trades over WebSocket with reconnect, resubscribe, heartbeat and de-duplication.

    Iterate `trades()` in an event loop; `reconnects` counts the reconnections made.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        api_key: str | None = None,
        url: str = "wss://ws.finnhub.io",
        heartbeat_timeout_s: float = 180.0,
        reconnect_delay_s: float = 0.5,
        max_reconnect_delay_s: float = 30.0,
        max_reconnects: int | None = None,
        dedup_window: int = 100_000,
    ) -> None:
        self.symbols = list(dict.fromkeys(symbols))
        self._api_key = api_key
        self.url = url
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.reconnect_delay_s = reconnect_delay_s
        self.max_reconnect_delay_s = max_reconnect_delay_s
        self.max_reconnects = max_reconnects
        self.reconnects = 0
        self.duplicates = 0
        self.pings = 0
        self.malformed = 0
        self._seen = _Seen(dedup_window)

    def _connect_url(self) -> str:
        if not self._api_key:
            return self.url
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}token={self._api_key}"

    async def frames(self) -> AsyncIterator[pl.DataFrame]:
        """Yield each message's new trades as a frame, forever (or until `max_reconnects`
        is exceeded); duplicates of recent trades are dropped."""
        import websockets  # lazily: importing quantivista stays cheap

        delay = self.reconnect_delay_s
        while True:
            try:
                async with websockets.connect(self._connect_url(), open_timeout=10) as ws:
                    for symbol in self.symbols:
                        await ws.send(json.dumps({"type": "subscribe", "symbol": symbol}))
                    delay = self.reconnect_delay_s
                    while True:
                        message = await asyncio.wait_for(ws.recv(), self.heartbeat_timeout_s)
                        try:
                            frame = parse_trade_frame(message)
                        except MalformedResponseError:  # one bad message never stops the feed
                            self.malformed += 1
                            continue
                        if frame.is_empty():
                            self.pings += 1
                            continue
                        fresh = self._seen.fresh(frame)
                        self.duplicates += frame.height - int(fresh.sum())
                        if fresh.any():
                            yield frame.filter(fresh)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                if self.max_reconnects is not None and self.reconnects >= self.max_reconnects:
                    raise TransientProviderError(
                        f"Finnhub WebSocket gave up after {self.reconnects} reconnects: {exc!r}",
                        provider=NAME,
                    ) from None
                self.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay_s)

    async def trades(self) -> AsyncIterator[Trade]:
        """Yield de-duplicated trades one by one (scripts and tests; the pipeline takes
        `frames()`)."""
        async for frame in self.frames():
            for row in frame.iter_rows(named=True):
                yield Trade(**row)

    async def collect(self, count: int, timeout_s: float = 10.0) -> list[Trade]:
        """Return the first `count` distinct trades (a convenience for scripts and tests)."""
        out: list[Trade] = []

        async def run() -> None:
            async for trade in self.trades():
                out.append(trade)
                if len(out) >= count:
                    return

        await asyncio.wait_for(run(), timeout_s)
        return out


class FinnhubProvider(HttpProvider):
    """Finnhub REST candles and quotes (key in the `X-Finnhub-Token` header)."""

    name = NAME
    default_base_url = "https://finnhub.io"
    key_header = "X-Finnhub-Token"
    ws_url = "wss://ws.finnhub.io"
    capabilities = ProviderCapabilities(
        asset_classes=frozenset({AssetClass.EQUITY}),
        timeframes=frozenset(_RESOLUTION),
        price_basis=PriceBasis.SPLITS,
        intraday_price_basis=PriceBasis.NONE,
        history_start=date(1990, 1, 2),
        intraday_lookback_days=365,
        realtime=True,
        corporate_actions=False,
        requires_key=True,
        cost_per_call=0.0,
        priority=40,
        notes="60 calls/min and 30/s; candles need a premium plan; daily split-adjusted",
    )

    def fetch_bars(self, request: BarRequest) -> FetchResult:
        self.require_key()
        tf = str(request.timeframe)
        if tf not in _RESOLUTION:
            raise EntitlementError(
                f"Finnhub has no {tf} candles", provider=NAME, symbol=request.symbol
            )
        params = {
            "symbol": request.symbol,
            "resolution": _RESOLUTION[tf],
            "from": str(int(request.start.timestamp())),
            "to": str(int(request.end.timestamp())),
        }
        _, payload = self.get(self.url("/api/v1/stock/candle"), params, symbol=request.symbol)
        bars = parse_candles(payload.body, request.symbol, tf)
        bars = bars.filter(pl.col("ts").is_between(request.start, request.end, closed="left"))
        return FetchResult(bars=bars, raw=[payload], provider=NAME)

    def fetch_quote(self, symbol: str) -> Quote:
        """Return the latest quote of `symbol`."""
        self.require_key()
        _, payload = self.get(self.url("/api/v1/quote"), {"symbol": symbol}, symbol=symbol)
        return parse_quote(payload.body, symbol)

    def trade_stream(self, symbols: Iterable[str], **kw: Any) -> FinnhubTradeStream:
        """Return a WebSocket trade stream for `symbols` using this provider's key."""
        return FinnhubTradeStream(symbols, api_key=self.require_key(), url=self.ws_url, **kw)
