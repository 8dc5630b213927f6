"""The Pulsar backend's own behaviour beyond the contract suite (pulsar-lite or a real broker)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bus.conftest import pulsar_broker
from quantivista.bus.pulsar import PulsarBroker


class LateCallbacks:
    """A producer whose send callbacks run after `flush()` has returned.

    The Pulsar client pops a send from its queue before it runs the send's callback (which
    waits for the GIL), so `flush()` can see an empty queue and return while receipts are
    still on their way; this makes that window wide instead of rare.
    """

    def __init__(self, real: Any, delay_s: float) -> None:
        self.real, self.delay_s = real, delay_s

    def send_async(self, value: bytes, callback: Any, **kwargs: Any) -> None:
        def later(result: Any, mid: Any) -> None:
            threading.Timer(self.delay_s, callback, (result, mid)).start()

        self.real.send_async(value, later, **kwargs)

    def flush(self) -> None:
        self.real.flush()


@pytest.fixture
def broker(pulsar_url: str) -> Iterator[PulsarBroker]:
    for made in pulsar_broker(pulsar_url):
        assert isinstance(made, PulsarBroker)
        yield made


def test_publish_waits_for_receipts_that_arrive_after_flush(broker: PulsarBroker) -> None:
    broker.create_topic("t", partitions=4)
    for p in range(4):
        name = broker.name("t", p)
        broker._producers[name] = LateCallbacks(broker._producer(name), delay_s=0.2)
    offsets = broker.publish_many("t", [(f"S{i}", str(i).encode(), None) for i in range(40)])
    assert len(offsets) == len(set(offsets)) == 40
    got = list(broker.read("t"))
    assert sorted(int(m.value) for m in got) == list(range(40))  # each once: nothing re-sent
    assert sorted(m.offset for m in got) == sorted(offsets)
