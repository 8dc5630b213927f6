"""Finnhub: `/api/v1/stock/candle`, `/api/v1/quote` and the trade WebSocket.

Candles are parallel arrays `c,h,l,o,s,t,v` with epoch-second `t`; daily bars are stamped
00:00 New York and split-adjusted, intraday bars are unadjusted and at most one month is
returned per call (the window's last month). An empty window, or an unknown symbol, is
HTTP 200 `{"s":"no_data"}`; an unknown symbol's quote is all zeros. The WebSocket takes
`{"type":"subscribe","symbol":...}` / `unsubscribe`, sends `{"type":"trade","data":[...]}`
batches (epoch-millisecond `t`) and `{"type":"ping"}` heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from starlette.websockets import WebSocket, WebSocketDisconnect

from quantivista.config import RateWindow
from quantivista.providers.simulator.formats.common import (
    Feed,
    Reply,
    SimRequest,
    VendorFormat,
    eastern_midnight,
    epoch_to_date,
    json_reply,
    stable_salt,
    with_adjustments,
)

if TYPE_CHECKING:
    from quantivista.providers.simulator.server import SimulatorServer

__all__ = ["FORMAT", "websocket_endpoint"]

_RESOLUTIONS = {
    "1": "1m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "D": "1d", "W": "1w", "M": "1mo",
}  # fmt: skip
_NO_DATA = {"s": "no_data"}


def _unauthorized(req: SimRequest) -> Reply | None:
    if req.query.get("token") or req.headers.get("x-finnhub-token"):
        return None
    return json_reply({"error": "Please use an API key."}, 401)


def candle(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/api/v1/stock/candle` like Finnhub."""
    if (denied := _unauthorized(req)) is not None:
        return denied
    symbol = req.query.get("symbol", "").upper()
    resolution = req.query.get("resolution", "")
    if resolution not in _RESOLUTIONS:
        return json_reply({"error": "Wrong resolution"}, 422)
    try:
        t_from, t_to = int(req.query["from"]), int(req.query["to"])
    except (KeyError, ValueError):
        return json_reply({"error": "Wrong from/to"}, 422)
    if not symbol or not feed.knows(symbol) or t_to < t_from:
        return json_reply(_NO_DATA)
    timeframe = _RESOLUTIONS[resolution]
    daily = timeframe in ("1d", "1w", "1mo")
    start, end = epoch_to_date(t_from), epoch_to_date(t_to)
    if not daily:
        start = max(start, end - timedelta(days=31))
    bars = feed.bars(symbol, start, end, timeframe)
    stamp = eastern_midnight(pl.col("ts")) if daily else pl.col("ts")
    bars = bars.with_columns(_t=stamp.dt.epoch("s")).filter(
        (pl.col("_t") >= t_from) & (pl.col("_t") <= t_to)
    )
    if bars.is_empty():
        return json_reply(_NO_DATA)
    split = pl.lit(1.0)
    if daily:
        bars = with_adjustments(feed, symbol, bars)
        split = pl.col("split_factor")
    out = bars.select(
        c=pl.col("close") / split,
        h=pl.col("high") / split,
        l=pl.col("low") / split,
        o=pl.col("open") / split,
        t=pl.col("_t"),
        v=(pl.col("volume") * split).round(0).cast(pl.Int64),
    )
    body: dict[str, Any] = {k: out[k].to_list() for k in ("c", "h", "l", "o")}
    body["s"] = "ok"
    body["t"] = out["t"].to_list()
    body["v"] = out["v"].to_list()
    return json_reply(body)


def quote(req: SimRequest, feed: Feed) -> Reply:
    """Answer `/api/v1/quote`: the last session's close; zeros for unknown symbols."""
    if (denied := _unauthorized(req)) is not None:
        return denied
    symbol = req.query.get("symbol", "").upper()
    zeros = {"c": 0, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
    if not symbol or not feed.knows(symbol):
        return json_reply(zeros)
    last = feed.last_session
    bars = feed.bars(symbol, last - timedelta(days=10), last).tail(2)
    if bars.is_empty():
        return json_reply(zeros)
    row = bars.row(-1, named=True)
    prev = float(bars["close"][0]) if bars.height > 1 else float(row["close"])
    close_t = feed.market.calendar.schedule.filter(pl.col("session") == row["ts"].date())
    change = round(row["close"] - prev, 4)
    return json_reply(
        {
            "c": row["close"],
            "d": change,
            "dp": round(change / prev * 100, 4) if prev else None,
            "h": row["high"],
            "l": row["low"],
            "o": row["open"],
            "pc": prev,
            "t": int(close_t["close"].dt.epoch("s")[0]),
        }
    )


def rate_limited(window: RateWindow, retry_after: int) -> Reply:
    """Finnhub answers 429 with `{"error": "API limit reached..."}`."""
    reply = json_reply(
        {"error": "API limit reached. Please try again later. Remaining Limit: 0"}, 429
    )
    return Reply(429, reply.body, reply.media_type, {"Retry-After": str(retry_after)})


def error_body(req: SimRequest, rng: np.random.Generator) -> Reply:
    """Return HTTP 200 with no data: `no_data` candles or an all-zero quote."""
    if req.path_params or "resolution" in req.query:
        return json_reply(_NO_DATA)
    return json_reply({"c": 0, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0})


FORMAT = VendorFormat(
    name="finnhub",
    routes=(("/api/v1/stock/candle", candle), ("/api/v1/quote", quote)),
    rate_limited=rate_limited,
    error_body=error_body,
)


# -- WebSocket -------------------------------------------------------------------------------
def websocket_endpoint(sim: SimulatorServer) -> Callable[[WebSocket], Awaitable[None]]:
    """Return the `/finnhub/ws` endpoint bound to a running simulator."""
    settings = sim.settings

    async def endpoint(ws: WebSocket) -> None:
        if not ws.query_params.get("token"):
            await ws.close(code=1008)  # Finnhub refuses keyless connections
            return
        await ws.accept()
        sim.ws_stats["connections"] += 1
        subscribed: dict[str, float] = {}  # symbol -> current simulated price
        rng = np.random.default_rng([settings.seed, stable_salt("finnhub-ws")])
        sender = asyncio.create_task(_send_loop(sim, ws, subscribed, rng))
        try:
            while True:
                text = await ws.receive_text()
                try:
                    msg = json.loads(text)
                    kind, symbol = msg.get("type"), str(msg.get("symbol", "")).upper()
                except (ValueError, AttributeError):
                    await ws.send_text(json.dumps({"type": "error", "msg": "Invalid message"}))
                    continue
                if kind == "subscribe" and symbol and symbol not in subscribed:
                    if sim.market._by_symbol.get(symbol) is None:
                        continue  # Finnhub accepts the message and just never sends trades
                    last = sim.market.sessions[-1]
                    bars = sim.market.daily(symbol, last - timedelta(days=10), last)
                    subscribed[symbol] = float(bars["close"][-1]) if bars.height else 10.0
                    sim.ws_stats["subscribes"] += 1
                elif kind == "unsubscribe":
                    subscribed.pop(symbol, None)
                    sim.ws_stats["unsubscribes"] += 1
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    return endpoint


async def _send_loop(
    sim: SimulatorServer, ws: WebSocket, subscribed: dict[str, float], rng: np.random.Generator
) -> None:
    settings = sim.settings
    started = time.monotonic()
    next_ping = started + settings.ws_ping_interval_s
    drop_after = settings.ws_disconnect_after_s
    while not await sim.wait_stopping(settings.ws_trade_interval_s):
        if drop_after is not None and time.monotonic() - started >= drop_after:
            sim.ws_stats["dropped"] += 1
            await ws.close(code=1011)  # an abrupt server-side drop: clients must reconnect
            return
        if time.monotonic() >= next_ping:
            await ws.send_text('{"type":"ping"}')
            sim.ws_stats["pings"] += 1
            next_ping += settings.ws_ping_interval_s
        if not subscribed:
            continue
        now_ms = int(time.time() * 1000)
        data = []
        for symbol in sorted(subscribed):
            price = round(subscribed[symbol] * float(np.exp(rng.normal(0, 0.0005))), 2)
            subscribed[symbol] = price
            data.append({"p": price, "s": symbol, "t": now_ms, "v": int(rng.integers(1, 500))})
        message = json.dumps({"data": data, "type": "trade"}, separators=(",", ":"))
        await ws.send_text(message)
        sim.ws_stats["trade_messages"] += 1
        if rng.random() < settings.ws_duplicate_rate:  # Finnhub re-delivers trades at times
            await ws.send_text(message)
            sim.ws_stats["duplicates"] += 1
    await ws.close(code=1001)
