"""The WebSocket stream over a real socket: auth, subscriptions, bars from the bus, drops."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets

from api.conftest import SYMBOLS, LiveApi, bearer, live_api, make_client
from quantivista.bus.events import BarsQuarantined, BarsStreamed
from quantivista.config import ApiSettings, Settings

AT = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def _ws(api: LiveApi) -> str:
    return api.url.replace("http", "ws", 1) + "/api/v1/stream"


_PENDING: dict[int, list[dict[str, Any]]] = {}


async def _recv(ws: Any, kind: str) -> dict[str, Any]:
    """Return the next message of `kind` (skipping heartbeats and others), within 10 s.

    A frame holds one message or an array of them; the rest of an array waits its turn.
    """
    pending = _PENDING.setdefault(id(ws), [])
    async with asyncio.timeout(10):
        while True:
            if not pending:
                frame = json.loads(await ws.recv())
                pending.extend(frame if isinstance(frame, list) else [frame])
            message = pending.pop(0)
            if message["type"] == kind:
                return message


def _publish(api: LiveApi, event: Any) -> None:
    api.server.config.app.state.qv.runtime.bus.publish(event)


def _bars(symbol: str, n: int, correction: bool = False, pad: int = 0) -> BarsStreamed:
    rows = [{"symbol": symbol, "timeframe": "1m", "ts": f"2026-11-23T15:{i:02d}:00+00:00",
             "open": 1.0 + i, "high": 2.0 + i, "low": 0.5 + i, "close": 1.5 + i,
             "volume": 10.0 * i, **({"note": "x" * pad} if pad else {})}
            for i in range(n)]  # fmt: skip
    return BarsStreamed(occurred_at=AT, source="test", timeframe="1m", rows=rows,
                        correction=correction)  # fmt: skip


def test_subscribers_get_their_bars_corrections_and_alerts(api: LiveApi, store: Settings) -> None:
    creds = make_client(store, "acme", "read:bars")
    token = bearer(api, creds)["Authorization"].split()[1]

    async def run() -> None:
        async with websockets.connect(_ws(api)) as ws:
            await ws.send(json.dumps({"action": "auth", "token": token}))
            await ws.send(json.dumps({"action": "subscribe", "bars": [SYMBOLS[0]],
                                      "quality": ["*"]}))  # fmt: skip
            subscribed = await _recv(ws, "subscribed")
            assert subscribed["bars"] == [SYMBOLS[0]] and subscribed["quality"] == ["*"]
            _publish(api, _bars(SYMBOLS[1], 2))  # not subscribed: nothing arrives
            _publish(api, _bars(SYMBOLS[0], 3))
            got = [await _recv(ws, "bar") for _ in range(3)]
            assert [m["close"] for m in got] == [1.5, 2.5, 3.5]
            assert {m["symbol"] for m in got} == {SYMBOLS[0]}
            _publish(api, _bars(SYMBOLS[0], 1, correction=True))
            assert (await _recv(ws, "correction"))["symbol"] == SYMBOLS[0]
            _publish(api, BarsQuarantined(occurred_at=AT, job_id="j", source="s", rows=2,
                                          rules={"spike": 2}))  # fmt: skip
            assert (await _recv(ws, "quality_alert"))["rules"] == {"spike": 2}

    asyncio.run(run())


def test_stored_bars_reach_subscribers_after_an_ingest(api: LiveApi, store: Settings) -> None:
    creds = make_client(store, "acme", "read:bars")

    async def run() -> None:
        async with websockets.connect(_ws(api)) as ws:
            await ws.send(json.dumps({"action": "auth", "api_key": creds.api_key}))
            await ws.send(json.dumps({"action": "subscribe", "bars": [SYMBOLS[1]]}))
            await _recv(ws, "subscribed")
            runtime = api.server.config.app.state.qv.runtime
            await asyncio.to_thread(runtime.ingestion.ingest, SYMBOLS[1], "2021-03-01",
                                    "2021-03-05")  # fmt: skip
            got = [await _recv(ws, "bar") for _ in range(5)]
            assert [m["ts"][:10] for m in got] == ["2021-03-01", "2021-03-02", "2021-03-03",
                                                   "2021-03-04", "2021-03-05"]  # fmt: skip

    asyncio.run(run())


def test_bad_auth_and_bad_messages_get_clear_answers(api: LiveApi, store: Settings) -> None:
    narrow = make_client(store, "ws-narrow", "read:bars")
    from quantivista.platform import Platform

    with Platform.from_settings(store) as p:
        p.runtime.auth.set_tenant("ws-narrow", symbols=[SYMBOLS[0]])

    async def run() -> None:
        async with websockets.connect(_ws(api)) as ws:
            await ws.send(json.dumps({"action": "auth", "token": "nope"}))
            assert (await _recv(ws, "error"))["message"].startswith("not a valid access token")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        async with websockets.connect(_ws(api)) as ws:
            await ws.send(json.dumps({"action": "auth", "api_key": narrow.api_key}))
            await ws.send("not json")
            assert "JSON" in (await _recv(ws, "error"))["message"]
            await ws.send(json.dumps({"action": "subscribe", "bars": [SYMBOLS[2]]}))
            assert "not entitled" in (await _recv(ws, "error"))["message"]
            await ws.send(json.dumps({"action": "subscribe", "bars": ["*"]}))
            assert "every symbol" in (await _recv(ws, "error"))["message"]

    asyncio.run(run())


def _stalled_client(url: str, messages: list[dict[str, Any]]) -> socket.socket:
    """Open a WebSocket on a raw socket with a tiny receive window, send, never read again."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri(url))
    host, port = url.split("//")[1].split("/")[0].split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    raw.connect((host, int(port)))
    protocol.send_request(protocol.connect())
    raw.sendall(b"".join(protocol.data_to_send()))
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(4096)
    protocol.receive_data(response)
    assert protocol.handshake_exc is None
    for message in messages:
        protocol.send_text(json.dumps(message).encode())
    raw.sendall(b"".join(protocol.data_to_send()))
    return raw


def test_a_slow_client_is_dropped_and_others_get_everything(store: Settings) -> None:
    api_settings = ApiSettings(ws_heartbeat_s=60, ws_queue_size=1024)
    settings = store.model_copy(update={"api": api_settings})
    creds = make_client(settings, "acme", "read:bars")
    total = 24 * 1024  # ~0.4 KB each: more than the socket buffers before a stalled reader
    hello = [{"action": "auth", "api_key": creds.api_key},
             {"action": "subscribe", "bars": ["*"]}]  # fmt: skip

    async def run(api: LiveApi) -> socket.socket:
        stalled = _stalled_client(_ws(api), hello)
        async with websockets.connect(_ws(api)) as fast:
            for message in hello:
                await fast.send(json.dumps(message))
            await _recv(fast, "subscribed")
            await asyncio.sleep(0.2)  # the stalled one is subscribed too

            async def publish() -> None:
                for _ in range(total // 16):  # 16 bars every 4 ms: 4,000 a second
                    _publish(api, _bars("BIG", 16, pad=300))
                    await asyncio.sleep(0.004)

            async def read_all() -> int:
                count = 0
                while count < total:
                    frame = json.loads(await fast.recv())
                    for message in frame if isinstance(frame, list) else [frame]:
                        count += message["type"] == "bar"
                return count

            async with asyncio.timeout(60):
                results = await asyncio.gather(publish(), read_all())
            assert results[1] == total
        return stalled

    with live_api(settings) as running:
        stalled = asyncio.run(run(running))
        with running.client() as http:
            metrics = http.get("/metrics").text
        state = running.server.config.app.state.qv
        assert state.metrics.ws_clients._value.get() == 0  # the stalled one is gone too
    stalled.close()
    assert 'qv_api_websocket_dropped_total{reason="slow"} 1.0' in metrics


def test_bars_and_trades_from_the_broker_reach_subscribers(store: Settings, nats_url: str) -> None:
    """`qv stream` in another process publishes to NATS; the API relays to its clients."""
    from uuid import uuid4

    import polars as pl

    from quantivista.bus.codecs import Codecs
    from quantivista.bus.events import BarBatch, TradesBatch
    from quantivista.bus.frames import to_ipc
    from quantivista.bus.nats import NatsBroker
    from quantivista.bus.registry import SchemaRegistry
    from quantivista.config import BusSettings
    from quantivista.storage.lake.catalog import SqliteCatalog

    url = f"{nats_url}?prefix=t{uuid4().hex[:10]}"
    settings = store.model_copy(update={"bus": BusSettings(url=url, codec="avro")})
    creds = make_client(store, "acme", "read:bars")
    publisher = NatsBroker(url)  # its own connection, as another process has
    codecs = Codecs(SchemaRegistry(SqliteCatalog(store.data_dir / "catalog.sqlite")))
    bars = pl.DataFrame(
        {
            "symbol": [SYMBOLS[0], SYMBOLS[1]],
            "timeframe": "1m",
            "ts": [AT, AT],
            "open": [1.0, 2.0],
            "high": [1.5, 2.5],
            "low": [0.5, 1.5],
            "close": [1.25, 2.25],
            "volume": [10.0, 20.0],
        }
    )
    trades = pl.DataFrame({"symbol": [SYMBOLS[0], SYMBOLS[1], SYMBOLS[0]],
                           "ts": [AT, AT, AT], "price": [1.1, 2.2, 1.2],
                           "size": [5.0, 6.0, 7.0], "provider": "finnhub"})  # fmt: skip

    def send(topic: str, event: Any) -> None:
        value, headers = codecs.encode(event, "avro")
        publisher.publish(topic, value, headers=headers)

    async def run(api: LiveApi) -> None:
        async with websockets.connect(_ws(api)) as ws:
            await ws.send(json.dumps({"action": "auth", "api_key": creds.api_key}))
            await ws.send(json.dumps({"action": "subscribe", "bars": [SYMBOLS[0]],
                                      "trades": [SYMBOLS[0]]}))  # fmt: skip
            assert (await _recv(ws, "subscribed"))["trades"] == [SYMBOLS[0]]
            send("bars.normalized", BarBatch(occurred_at=AT, source="stream", stage="normalized",
                                          timeframe="1m", rows=2, symbols=[SYMBOLS[0],
                                          SYMBOLS[1]], bars=to_ipc(bars)))  # fmt: skip
            send("trades.finnhub", TradesBatch(occurred_at=AT, source="finnhub", rows=3,
                                               symbols=[SYMBOLS[0], SYMBOLS[1]],
                                               trades=to_ipc(trades)))  # fmt: skip
            publisher.publish("bars.normalized", b"\x00not an event")  # skipped, never fatal
            bar = await _recv(ws, "bar")
            assert bar["symbol"] == SYMBOLS[0] and bar["close"] == 1.25
            assert bar["ts"].startswith("2026-11-23T15:00:00")
            got = [await _recv(ws, "trade") for _ in range(2)]
            assert [(t["symbol"], t["price"]) for t in got] == [
                (SYMBOLS[0], 1.1),
                (SYMBOLS[0], 1.2),
            ]
            send("bars.normalized", BarBatch(occurred_at=AT, source="stream", stage="normalized",
                                          timeframe="1m", rows=1, symbols=[SYMBOLS[0]],
                                          bars=to_ipc(bars.head(1).with_columns(close=pl.lit(1.3))),
                                          correction=True))  # fmt: skip
            assert (await _recv(ws, "correction"))["close"] == 1.3

    try:
        with live_api(settings) as api:
            asyncio.run(run(api))
            relay = api.server.config.app.state.relay
            assert relay is not None and relay.undecodable == 1
    finally:
        for topic in publisher.topics():
            publisher.delete_topic(topic)
        publisher.close()


def test_rows_become_one_json_message_each_encoded_by_polars() -> None:
    import polars as pl

    from quantivista.api.stream import _messages

    frame = pl.DataFrame(
        {
            "symbol": ["A", "B"],
            "ts": [AT, AT],
            "close": [1.25, None],
            "volume": [10.0, 3.0],
        }
    )
    got = _messages("bar", frame)
    assert [s for s, _ in got] == ["A", "B"]
    rows = [json.loads(text) for _, text in got]
    assert rows[0] == {"type": "bar", "symbol": "A", "ts": rows[0]["ts"], "close": 1.25,
                       "volume": 10.0}  # fmt: skip
    assert rows[0]["ts"].startswith(AT.strftime("%Y-%m-%dT%H:%M:%S"))
    assert rows[1]["close"] is None
    assert _messages("bar", frame.head(0)) == []
