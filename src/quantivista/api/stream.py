"""WebSocket `/api/v1/stream`: bars, corrections and quality alerts pushed from the bus.

Protocol (JSON text frames):

    -> {"action": "auth", "token": "<bearer>"}          (or "api_key"; within 10 s)
    -> {"action": "subscribe", "bars": ["AAPL"], "trades": ["AAPL"], "quality": ["*"]}
    -> {"action": "unsubscribe", "bars": ["AAPL"]}
    <- {"type": "subscribed", "bars": [...], "trades": [...], "quality": [...]}
    <- {"type": "bar" | "correction", "symbol", "timeframe", "ts", "open", ..., "volume"}
    <- {"type": "trade", "symbol", "ts", "price", "size", "provider"}
    <- {"type": "quality_alert", "job_id", "rows", "rules"}
    <- {"type": "heartbeat", "ts"}   every `heartbeat_s`
    <- {"type": "error", "message"}

A frame carries one message, or a JSON array of messages (the bars of one micro-batch a
client subscribed to travel together).

The hub subscribes once to the platform's bus, and (`api.relay`) follows the broker's bar
and trade topics that `qv stream` / `qv integrate` publish from other processes; each
message is encoded once and queued to every client that wants it. A client whose queue
fills (it reads slower than data arrives) is closed with code 1013 and the reason, never
slowing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from quantivista.api.deps import authenticated
from quantivista.api.state import ApiState
from quantivista.bus.events import (
    BarBatch,
    BarsIngested,
    BarsQuarantined,
    BarsStreamed,
    Event,
    TradesBatch,
)
from quantivista.bus.frames import from_ipc
from quantivista.errors import QuantiVistaError
from quantivista.model.auth import Principal, Scope
from quantivista.model.timeframe import Timeframe

__all__ = ["StreamHub", "router"]

router = APIRouter()

_BAR_FIELDS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "vwap")
_AUTH_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Client:
    """One connected socket: what it wants and its outgoing queue."""

    principal: Principal
    queue: asyncio.Queue[str]
    bars: set[str] = field(default_factory=set)
    trades: set[str] = field(default_factory=set)
    quality: set[str] = field(default_factory=set)
    dropped: str | None = None
    writer: asyncio.Task[None] | None = None


class StreamHub:
    """Fan out bus events to WebSocket clients (one hub per API process)."""

    def __init__(self, state: ApiState, heartbeat_s: float = 15.0) -> None:
        self.state = state
        self.heartbeat_s = heartbeat_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._by_symbol: dict[str, set[_Client]] = defaultdict(set)
        self._wildcard: set[_Client] = set()  # subscribed to every symbol ("*")
        self._quality: set[_Client] = set()
        self._trades: set[_Client] = set()  # clients that asked for some symbol's trades
        self._subs: list[str] = []
        self.sent = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe to the bus; deliveries are handed to `loop`."""
        self.loop = loop
        bus = self.state.runtime.bus
        self._subs = [
            bus.subscribe(BarsStreamed.topic, self._on_event, name="ws-hub"),
            bus.subscribe(BarsIngested.topic, self._on_event, name="ws-hub"),
            bus.subscribe(BarsQuarantined.topic, self._on_event, name="ws-hub"),
        ]

    def stop(self) -> None:
        """Leave the bus."""
        for sid in self._subs:
            self.state.runtime.bus.unsubscribe(sid)

    # -- subscriptions ---------------------------------------------------------------------
    def add(self, client: _Client) -> None:
        self.state.metrics.ws_clients.inc()

    def remove(self, client: _Client) -> None:
        with self._lock:
            for symbol in client.bars:
                self._by_symbol[symbol].discard(client)
            self._wildcard.discard(client)
            self._quality.discard(client)
            self._trades.discard(client)
        self.state.metrics.ws_clients.dec()

    def trades(self, client: _Client, add: list[str], drop: list[str]) -> None:
        """Change which symbols' trades `client` gets."""
        with self._lock:
            client.trades = (client.trades | set(add)) - set(drop)
            (self._trades.add if client.trades else self._trades.discard)(client)

    def subscribe(self, client: _Client, bars: list[str], quality: list[str]) -> None:
        with self._lock:
            for symbol in bars:
                (self._wildcard if symbol == "*" else self._by_symbol[symbol]).add(client)
            client.bars |= set(bars)
            if quality:
                self._quality.add(client)
                client.quality |= set(quality)

    def unsubscribe(self, client: _Client, bars: list[str], quality: list[str]) -> None:
        with self._lock:
            for symbol in bars:
                (self._wildcard if symbol == "*" else self._by_symbol[symbol]).discard(client)
            client.bars -= set(bars)
            if quality:
                client.quality -= set(quality)
                if not client.quality:
                    self._quality.discard(client)

    # -- delivery --------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        """Called on the publisher's thread: encode once, hand to the event loop."""
        if self.loop is None:
            return
        if isinstance(event, BarsQuarantined):
            text = json.dumps({"type": "quality_alert", "job_id": event.job_id,
                               "source": event.source, "rows": event.rows,
                               "rules": event.rules})  # fmt: skip
            with self._lock:
                watchers = list(self._quality)
            self.loop.call_soon_threadsafe(self._deliver, [(c, text) for c in watchers])
            return
        if isinstance(event, BarsStreamed):
            kind = "correction" if event.correction else "bar"
            self._on_bars(kind, pl.from_dicts(event.rows) if event.rows else pl.DataFrame())
        elif isinstance(event, BarsIngested):
            self._on_bars("bar", self._stored_bars(event))

    def relay(self, event: Event) -> None:
        """Deliver a batch from the broker (any thread): bars, corrections and trades."""
        if isinstance(event, BarBatch):
            frame = from_ipc(event.bars)
            wanted = [c for c in _BAR_FIELDS if c in frame.columns]
            self._on_bars("correction" if event.correction else "bar", frame.select(wanted))
        elif isinstance(event, TradesBatch):
            self._on_trades(from_ipc(event.trades))
        else:
            self._on_event(event)

    def _on_bars(self, kind: str, bars: pl.DataFrame) -> None:
        """Queue the bars of a micro-batch to the clients subscribed to their symbols."""
        if self.loop is None or bars.is_empty():
            return
        with self._lock:
            wildcard = set(self._wildcard)
            targets = {s: c | wildcard for s, c in self._by_symbol.items() if c}
        if not wildcard:  # encode only the rows someone wants
            bars = bars.filter(pl.col("symbol").is_in(list(targets)))
        self._fan_out(_messages(kind, bars), lambda symbol: targets.get(symbol, wildcard))

    def _on_trades(self, trades: pl.DataFrame) -> None:
        """Queue `trade` messages to the clients that asked for the trades of a symbol."""
        if self.loop is None or trades.is_empty():
            return
        with self._lock:
            watchers = [c for c in self._trades if c.dropped is None]
        if not watchers:
            return
        every = {c for c in watchers if "*" in c.trades}
        by_symbol: dict[str, set[_Client]] = defaultdict(lambda: set(every))
        for client in watchers:  # one entry per client and symbol, not per row
            for symbol in client.trades - {"*"}:
                by_symbol[symbol].add(client)
        if not every:
            trades = trades.filter(pl.col("symbol").is_in(list(by_symbol)))
        self._fan_out(_messages("trade", trades), lambda symbol: by_symbol.get(symbol, every))

    def _fan_out(
        self, messages: list[tuple[str, str]], targets: Callable[[str], set[_Client]]
    ) -> None:
        """Hand each client one frame per micro-batch: a message, or an array of them."""
        if self.loop is None or not messages:
            return
        per_client: dict[_Client, list[str]] = defaultdict(list)
        for symbol, text in messages:  # each message encoded once, for every client
            for client in targets(symbol):
                per_client[client].append(text)
        batch = [
            (c, texts[0] if len(texts) == 1 else "[" + ",".join(texts) + "]")
            for c, texts in per_client.items()
        ]
        if batch:
            self.loop.call_soon_threadsafe(self._deliver, batch)

    def _stored_bars(self, event: BarsIngested) -> pl.DataFrame:
        """Read the bars a store write announced, for the symbols someone subscribed to."""
        with self._lock:
            wanted = (
                list(event.symbols)
                if self._wildcard
                else [s for s in event.symbols if self._by_symbol.get(s)]
            )
        if not wanted or event.first_ts is None or event.last_ts is None:
            return pl.DataFrame()
        return self.state.runtime.backend.bars.read(
            wanted, Timeframe.parse(event.timeframe), event.first_ts,
            event.last_ts + timedelta(microseconds=1), columns=list(_BAR_FIELDS),
        )  # fmt: skip

    def _deliver(self, batch: list[tuple[_Client, str]]) -> None:
        """On the event loop: queue each message; drop clients that cannot keep up."""
        for client, text in batch:
            if client.dropped is not None:
                continue
            try:
                client.queue.put_nowait(text)
                self.sent += 1
            except asyncio.QueueFull:
                client.dropped = f"slow consumer: {client.queue.qsize()} messages behind"
                self.state.metrics.ws_dropped.labels("slow").inc()
                if client.writer is not None:  # it may be stuck sending to the stalled peer
                    client.writer.cancel()


def _iso(ts: pl.Expr) -> pl.Expr:
    return ts.dt.to_string("%Y-%m-%dT%H:%M:%S%.f%z")


def _messages(kind: str, frame: pl.DataFrame) -> list[tuple[str, str]]:
    """Return (symbol, JSON text) per row: `{"type": kind, ...the row}`, encoded by polars
    in one pass (no Python dict per row)."""
    if frame.is_empty():
        return []
    if isinstance(frame.schema.get("ts"), pl.Datetime):
        frame = frame.with_columns(_iso(pl.col("ts")))
    lines = frame.select(pl.lit(kind).alias("type"), *frame.columns).write_ndjson().splitlines()
    return list(zip(frame["symbol"].cast(pl.String).to_list(), lines, strict=True))


def _message(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise QuantiVistaError("a message must be a JSON object") from None
    if not isinstance(data, dict):
        raise QuantiVistaError("a message must be a JSON object")
    return data


def _names(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise QuantiVistaError(f"{key} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


async def _authenticate(ws: WebSocket, state: ApiState) -> Principal:
    data = _message(await asyncio.wait_for(ws.receive_text(), _AUTH_TIMEOUT_S))
    if data.get("action") != "auth":
        raise QuantiVistaError('authenticate first: {"action": "auth", "token": ...}')
    if data.get("token"):
        principal = state.auth.from_token(str(data["token"]))
    elif data.get("api_key"):
        principal = await authenticated(state, None, str(data["api_key"]))
    else:
        raise QuantiVistaError("auth needs a token or an api_key")
    if not principal.can(Scope.READ_BARS):
        raise QuantiVistaError("streaming needs the read:bars scope")
    return principal


async def _writer(ws: WebSocket, client: _Client, hub: StreamHub) -> None:
    clock = hub.state.runtime.clock
    while True:
        try:
            text = await asyncio.wait_for(client.queue.get(), hub.heartbeat_s)
        except TimeoutError:
            text = json.dumps({"type": "heartbeat", "ts": clock.now().isoformat()})
        if client.dropped is not None:
            return
        await ws.send_text(text)


@router.websocket("/api/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Push bars, corrections and quality alerts to a subscribed client."""
    state: ApiState = ws.app.state.qv
    hub: StreamHub = ws.app.state.hub
    await ws.accept()
    try:
        principal = await _authenticate(ws, state)
    except (QuantiVistaError, TimeoutError, WebSocketDisconnect) as exc:
        with contextlib.suppress(Exception):
            await ws.send_text(json.dumps({"type": "error", "message": str(exc)}))
            await ws.close(code=4401, reason="authentication failed")
        return
    client = _Client(principal, asyncio.Queue(state.runtime.settings.api.ws_queue_size))
    hub.add(client)
    writer = asyncio.create_task(_writer(ws, client, hub))
    client.writer = writer
    tenant = state.auth.tenant(principal.tenant)
    try:
        while not writer.done():
            receive = asyncio.create_task(ws.receive_text())
            done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            try:
                data = _message(receive.result())
                bars, trades = _names(data, "bars"), _names(data, "trades")
                quality = _names(data, "quality")
                action = data.get("action")
                if action == "subscribe":
                    concrete = [s for s in bars + trades if s != "*"]
                    state.auth.entitled(tenant, dataset="bars", symbols=concrete)
                    if "*" in bars + trades and tenant.symbols is not None:
                        raise QuantiVistaError("this tenant may not subscribe to every symbol")
                    hub.subscribe(client, bars, quality)
                    hub.trades(client, trades, [])
                elif action == "unsubscribe":
                    hub.unsubscribe(client, bars, quality)
                    hub.trades(client, [], trades)
                else:
                    raise QuantiVistaError("action is subscribe or unsubscribe")
                reply = {
                    "type": "subscribed",
                    "bars": sorted(client.bars),
                    "trades": sorted(client.trades),
                    "quality": sorted(client.quality),
                }
            except QuantiVistaError as exc:
                reply = {"type": "error", "message": str(exc)}
            client.queue.put_nowait(json.dumps(reply))
    except WebSocketDisconnect:
        pass
    finally:
        stuck = writer.cancelled()
        writer.cancel()
        hub.remove(client)
        # a peer that stopped reading gets its connection closed by the server returning;
        # one that still reads learns why
        if client.dropped is not None and not stuck:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1013, reason=client.dropped[:120]), 2.0)
