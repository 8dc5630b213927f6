"""Fixtures of the bus tests: brokers for the contract suites (memory, NATS JetStream)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

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


@pytest.fixture(params=["memory", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "memory":
        yield MemoryBroker()
        return
    yield from nats_broker(request.getfixturevalue("nats_url"))
