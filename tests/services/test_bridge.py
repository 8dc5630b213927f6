"""The broker bridge: bars and quality alerts from broker topics reach the in-process bus."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import polars as pl

from quantivista.bus.codecs import Codecs
from quantivista.bus.events import BarBatch, BarsQuarantined, BarsStreamed, Event
from quantivista.bus.frames import to_ipc
from quantivista.bus.memory import InMemoryBus
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.bus.topics import QUALITY_ALERTS
from quantivista.services.bridge import BrokerBridge

AT = datetime(2026, 12, 1, 14, 31, tzinfo=UTC)


def test_the_bridge_relays_new_bars_and_alerts_to_the_bus() -> None:
    broker, codecs, bus = MemoryBroker(), Codecs(), InMemoryBus()
    seen: list[Event] = []
    bus.subscribe("bars.streamed", seen.append)
    bus.subscribe("bars.quarantined", seen.append)
    frame = pl.DataFrame({"symbol": ["AAPL"], "timeframe": ["1m"], "ts": [AT], "open": [1.0],
                          "high": [2.0], "low": [0.5], "close": [1.5],
                          "volume": [10.0]})  # fmt: skip
    event = BarBatch(occurred_at=AT, source="finnhub", stage="raw", timeframe="1m", rows=1,
                     symbols=["AAPL"], bars=to_ipc(frame), correction=True)  # fmt: skip
    old, _ = codecs.encode(event, "avro")
    broker.publish("bars.raw.1m", old, key="AAPL")  # before the bridge: not relayed
    bridge = BrokerBridge(broker, codecs, bus).start()
    try:
        broker.publish("bars.raw.1m", codecs.encode(event, "protobuf")[0], key="AAPL")
        alert = BarsQuarantined(occurred_at=AT, job_id="j", source="s", rows=2, rules={"x": 2})
        broker.publish(QUALITY_ALERTS, codecs.encode(alert, "json")[0], key="j")
        broker.publish("bars.raw.1m", b"\x07junk", key="AAPL")  # skipped, not fatal
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        bridge.stop()
    streamed = [e for e in seen if isinstance(e, BarsStreamed)]
    assert len(streamed) == 1 and streamed[0].correction
    assert streamed[0].rows == [{"symbol": "AAPL", "timeframe": "1m", "open": 1.0, "high": 2.0,
                                 "low": 0.5, "close": 1.5, "volume": 10.0,
                                 "ts": "2026-12-01T14:31:00+0000"}]  # fmt: skip
    assert [e for e in seen if isinstance(e, BarsQuarantined)] == [alert]
