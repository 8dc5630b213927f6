"""`open_broker` picks the backend by URL scheme, with the prefix and settings of the URL;
and the Pulsar stand-in keeps topics and a group's position over a broker restart."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from brokers import PulsarLite, Tansu
from quantivista.bus.base import StartAt
from quantivista.bus.connect import open_broker
from quantivista.bus.kafka import KafkaBroker
from quantivista.bus.memory_broker import MemoryBroker
from quantivista.bus.pulsar import PulsarBroker
from quantivista.config import BusSettings
from quantivista.errors import BusError, ConfigurationError


def test_memory_is_the_default_and_unknown_schemes_are_refused() -> None:
    assert isinstance(open_broker(None), MemoryBroker)
    assert isinstance(open_broker("memory://"), MemoryBroker)
    with pytest.raises(ConfigurationError, match="kafka://"):
        open_broker("amqp://127.0.0.1:5672")


def test_kafka_urls_open_the_kafka_backend_with_their_prefix(tansu: Tansu) -> None:
    prefix = f"t{uuid4().hex[:8]}"
    broker = open_broker(f"{tansu.url}?prefix={prefix}", BusSettings())
    try:
        assert isinstance(broker, KafkaBroker)
        broker.create_topic("bars", partitions=2)
        assert broker.topics() == ["bars", "dlq.bars"]
        assert broker.name("bars") == f"{prefix}.bars"
    finally:
        broker.close()


def test_kafka_refuses_a_broker_that_is_not_there() -> None:
    from brokers import free_port

    with pytest.raises(BusError, match="cannot connect to Kafka"):
        KafkaBroker(f"kafka://127.0.0.1:{free_port()}", timeout_s=1.0)


def test_pulsar_keeps_topics_and_a_group_position_over_a_restart(tmp_path: Path) -> None:
    server = PulsarLite(tmp_path / "pulsar")
    server.start()
    try:
        url = f"{server.url}?prefix=t{uuid4().hex[:8]}"
        broker = open_broker(url, BusSettings())
        assert isinstance(broker, PulsarBroker)
        broker.create_topic("t", partitions=2)
        offsets = broker.publish_many("t", [(f"S{i}", str(i).encode(), None) for i in range(10)])
        sub = broker.subscribe("t", "g")
        got = []
        while len(got) < 10:
            got.extend(sub.fetch(10, timeout_s=2.0))
        acked = sorted(got, key=lambda m: m.offset)[:6]
        for m in acked:
            sub.ack(m)
        sub.close()
        broker.close()

        server.stop()
        server.start()

        again = open_broker(url, BusSettings())
        assert again.topics() == ["dlq.t", "t"]
        assert sorted(m.offset for m in again.read("t")) == sorted(offsets)
        sub = again.subscribe("t", "g", start=StartAt(latest=True))  # an old group: ignored
        rest = []
        for _ in range(10):
            rest.extend(sub.fetch(10, timeout_s=1.0))
            if len(rest) >= 4:
                break
        assert sorted(m.offset for m in rest) == sorted(set(offsets) - {m.offset for m in acked})
        sub.close()
        again.close()
    finally:
        server.stop()
