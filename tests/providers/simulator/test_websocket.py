"""The Finnhub WebSocket streams trades for subscribed symbols and sends pings."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from quantivista.providers.simulator import SimulatedMarket
from quantivista.providers.simulator.server import SimulatorHandle, run_simulator

from .helpers import SETTINGS, fixture_json, needs_fixtures, shape

PAYER, SPLITTER = "WUWCGE", "KNPGRA"


def messages(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return out


def traded(msgs: list[dict[str, Any]]) -> set[str]:
    return {t["s"] for m in msgs if m["type"] == "trade" for t in m["data"]}


@needs_fixtures
def test_subscribe_streams_trades_in_finnhub_format(sim: SimulatorHandle) -> None:
    with connect(sim.ws_url() + "?token=t") as ws:
        ws.send(json.dumps({"type": "subscribe", "symbol": PAYER}))
        msgs = messages(ws, 0.4)
    trades = [m for m in msgs if m["type"] == "trade"]
    assert trades, msgs
    assert shape(trades[0]) == shape(fixture_json("finnhub", "ws_trade_doc_sample.json"))
    last_close = sim.market.bars(PAYER, "2026-11-16", "2026-11-20")["close"][-1]
    prices = [t["p"] for m in trades for t in m["data"]]
    assert all(abs(p / last_close - 1) < 0.05 for p in prices)
    stamps = [t["t"] for m in trades for t in m["data"]]
    assert abs(stamps[-1] / 1000 - time.time()) < 5  # epoch milliseconds, live
    assert {"type": "ping"} in msgs  # the test settings ping every 0.1 s
    assert sim.stats()["websocket"]["subscribes"] == 1


def test_unsubscribe_stops_that_symbol_only(sim: SimulatorHandle) -> None:
    with connect(sim.ws_url() + "?token=t") as ws:
        for symbol in (PAYER, SPLITTER, "NOSUCH"):
            ws.send(json.dumps({"type": "subscribe", "symbol": symbol}))
        assert traded(messages(ws, 0.3)) == {PAYER, SPLITTER}
        ws.send(json.dumps({"type": "unsubscribe", "symbol": PAYER}))
        messages(ws, 0.1)  # drain what was in flight
        assert traded(messages(ws, 0.3)) == {SPLITTER}
        ws.send("not json")
        assert {"type": "error", "msg": "Invalid message"} in messages(ws, 0.2)


def test_connection_without_token_is_refused(sim: SimulatorHandle) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(sim.ws_url())
    assert refused.value.response.status_code == 403


def test_connections_drop_after_the_configured_time(market: SimulatedMarket) -> None:
    settings = SETTINGS.model_copy(update={"ws_disconnect_after_s": 0.2})
    with run_simulator(settings, market=market) as sim, connect(sim.ws_url() + "?token=t") as ws:
        ws.send(json.dumps({"type": "subscribe", "symbol": PAYER}))
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                ws.recv(timeout=3)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert sim.stats()["websocket"]["dropped"] == 1
