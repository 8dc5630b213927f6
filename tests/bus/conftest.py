"""Fixtures of the bus tests: brokers for the contract suites (memory, NATS JetStream, Kafka)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from brokers import Tansu
from quantivista.bus.base import Broker
from quantivista.bus.memory_broker import MemoryBroker


def nats_broker(url: str) -> Iterator[Broker]:
    """Yield a NATS broker whose streams are this test's own; delete them afterwards."""
    from quantivista.bus.nats import NatsBroker

    broker = NatsBroker(f"{url}?prefix=t{uuid4().hex[:10]}")
    try:
        yield broker
    finally:
        for topic in broker.topics():
            broker.delete_topic(topic)
        broker.close()


@pytest.fixture(scope="session")
def tansu() -> Iterator[Tansu]:
    """One Tansu broker (memory storage) for the session; tests use their own topic prefix."""
    server = Tansu()
    server.start()
    yield server
    server.stop()


def kafka_broker(url: str) -> Iterator[Broker]:
    """Yield a Kafka broker whose topics and groups are this test's own."""
    from quantivista.bus.kafka import KafkaBroker

    broker = KafkaBroker(f"{url}?prefix=t{uuid4().hex[:10]}")
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(params=["memory", "nats", "kafka"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "memory":
        yield MemoryBroker()
        return
    if request.param == "kafka":
        yield from kafka_broker(request.getfixturevalue("tansu").url)
        return
    yield from nats_broker(request.getfixturevalue("nats_url"))
