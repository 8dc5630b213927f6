"""Following a NATS topic with an ordered push consumer (what the API's relay uses)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from quantivista.api.relay import BrokerRelay
from quantivista.bus.base import Message, StartAt
from quantivista.bus.codecs import Codecs
from quantivista.bus.events import BarsQuarantined, Event

pytestmark = pytest.mark.nats


def wait_for(check, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_follow_pushes_messages_from_the_start_in_order_until_stopped(nats_url: str) -> None:
    from quantivista.bus.nats import NatsBroker

    broker = NatsBroker(f"{nats_url}?prefix=streamlat{uuid4().hex[:8]}")
    try:
        broker.create_topic("bars.raw.1m", partitions=4)
        before = broker.publish_many("bars.raw.1m", [(f"S{i}", b"old", None) for i in range(3)])
        got: list[Message] = []
        lock = threading.Lock()

        def keep(message: Message) -> None:
            with lock:
                got.append(message)

        stop = broker.follow("bars.raw.1m", StartAt(offset=max(before) + 1), keep)
        items = [(f"S{i % 5}", f"m{i}".encode(), {"n": str(i)}) for i in range(40)]
        offsets = broker.publish_many("bars.raw.1m", items)
        wait_for(lambda: len(got) >= 40)
        assert [m.offset for m in got] == offsets
        assert [m.value for m in got] == [v for _, v, _ in items]
        assert [m.key for m in got] == [k for k, _, _ in items]
        assert got[7].headers["n"] == "7"
        stop()
        broker.publish("bars.raw.1m", b"after")
        time.sleep(0.3)
        assert len(got) == 40
    finally:
        for topic in broker.topics():
            broker.delete_topic(topic)
        broker.close()


def test_the_relay_takes_pushed_messages_and_counts_undecodable_ones(nats_url: str) -> None:
    from quantivista.bus.nats import NatsBroker

    broker = NatsBroker(f"{nats_url}?prefix=streamlat{uuid4().hex[:8]}")
    codecs = Codecs()
    seen: list[Event] = []
    relay = BrokerRelay(broker, codecs, seen.append, ["quality.alerts"])
    try:
        broker.create_topic("quality.alerts")
        broker.publish("quality.alerts", b"not an event")  # before the start: not relayed
        relay.start()
        assert relay._unfollow  # pushed, not polled
        event = BarsQuarantined(occurred_at=datetime.now(UTC), job_id="j", source="s", rows=2,
                                rules={"ohlc": 2})  # fmt: skip
        value, headers = codecs.encode(event, "json")
        broker.publish("quality.alerts", b"garbage")
        broker.publish("quality.alerts", value, headers=headers)
        wait_for(lambda: relay.relayed == 1)
        assert relay.relayed == 1 and relay.undecodable == 1
        assert isinstance(seen[0], BarsQuarantined) and seen[0].rows == 2
    finally:
        relay.stop()
        for topic in broker.topics():
            broker.delete_topic(topic)
        broker.close()
