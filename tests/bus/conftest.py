"""Fixtures of the bus tests: brokers for the contract suites (memory, NATS JetStream, Kafka),
and a state store in memory for the schema registry."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest

from brokers import PulsarLite, Tansu
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


@pytest.fixture(scope="session")
def pulsar_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Pulsar broker when QV_BUS__PULSAR_URL is set, else a pulsar-lite of our own."""
    from conftest import _settings

    real = _settings().bus.pulsar_url
    if real:
        yield real
        return
    server = PulsarLite(tmp_path_factory.mktemp("pulsar"))
    server.start()
    yield server.url
    server.stop()


def pulsar_broker(url: str) -> Iterator[Broker]:
    """Yield a Pulsar broker whose topics and groups are this test's own."""
    from quantivista.bus.pulsar import PulsarBroker

    broker = PulsarBroker(f"{url}?prefix=t{uuid4().hex[:10]}")
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(params=["memory", "nats", "kafka", "pulsar"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "memory":
        yield MemoryBroker()
        return
    if request.param == "kafka":
        yield from kafka_broker(request.getfixturevalue("tansu").url)
        return
    if request.param == "pulsar":
        yield from pulsar_broker(request.getfixturevalue("pulsar_url"))
        return
    yield from nats_broker(request.getfixturevalue("nats_url"))


class MemoryState:
    """A `StateStore` in memory, with the catalogs' atomic insert-if-absent."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get_state(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def setdefault_state(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return self.data.setdefault(key, value)
