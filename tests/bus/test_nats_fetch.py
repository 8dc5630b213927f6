"""A NATS pull that outlived its fetch can hand a delivery over again after it was settled:
the subscription tells it from a redelivery by its reply subject (one per delivery)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.bus.conftest import nats_broker

from quantivista.bus.base import Subscription

pytestmark = pytest.mark.nats


@pytest.fixture
def broker(nats_url: str) -> Iterator[Any]:
    yield from nats_broker(nats_url)


def _hand_over_again(sub: Subscription, raw: list[Any]) -> None:
    async def late(max_messages: int, timeout_s: float) -> list[Any]:
        return raw  # what a pull that outlived its fetch delivers to the next one

    sub._fetch = late  # type: ignore[attr-defined]


def test_a_delivery_handed_over_again_after_its_ack_is_not_a_new_message(broker: Any) -> None:
    broker.create_topic("t")
    broker.publish("t", b"x", key="A")
    sub = broker.subscribe("t", "g")
    (first,) = sub.fetch(10, 2.0)
    raw = list(sub._inflight.values())  # the server's delivery, as the client got it
    sub.ack(first)
    real = sub._fetch
    _hand_over_again(sub, raw)
    assert sub.fetch(10, 0.5) == []  # not applied twice
    sub._fetch = real
    assert sub.fetch(10, 0.5) == []  # and the server has nothing more
    sub.close()


def test_a_nacked_delivery_handed_over_again_is_skipped_but_its_redelivery_comes(
    broker: Any,
) -> None:
    broker.create_topic("t")
    broker.publish("t", b"x", key="A")
    sub = broker.subscribe("t", "g")
    (first,) = sub.fetch(10, 2.0)
    raw = list(sub._inflight.values())
    sub.nack(first, "later", delay_s=0.2)
    real = sub._fetch
    _hand_over_again(sub, raw)
    assert sub.fetch(10, 0.5) == []
    sub._fetch = real
    again = sub.fetch(10, 3.0)  # the server's redelivery: a new reply subject
    assert [(m.offset, m.deliveries) for m in again] == [(first.offset, 2)]
    sub.ack(again[0])
    sub.close()
