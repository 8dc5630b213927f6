"""A NATS pull that outlived its fetch can hand a delivery over again after it was settled:
the subscription tells it from a redelivery by its reply subject (one per delivery). The
server can also deliver an acked message anew (a new reply subject): it is acked again and
skipped, never applied twice."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from tests.bus.conftest import nats_broker

from quantivista.bus.base import Subscription
from quantivista.ops.metrics import REGISTRY

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


def _delivered_anew(raw: Any) -> Any:
    """`raw` as the server sends it again: one more delivery, a new consumer sequence."""
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
    head, delivered, stream_seq, consumer_seq, stamp, pending = raw.reply.rsplit(".", 5)
    reply = ".".join(
        [head, str(int(delivered) + 1), stream_seq, str(int(consumer_seq) + 7), stamp, pending]
    )
    return replace(raw, reply=reply, _metadata=None, _ackd=False)


def test_an_acked_message_delivered_anew_is_acked_again_and_skipped(broker: Any) -> None:
    broker.create_topic("t")
    broker.publish("t", b"x", key="A")
    broker.publish("t", b"y", key="B")
    sub = broker.subscribe("t", "g")
    first, second = sub.fetch(10, 2.0)
    raw = sub._inflight[first.offset]
    sub.ack(first)
    sub.nack(second, "later", delay_s=0.2)
    real = sub._fetch
    _hand_over_again(sub, [_delivered_anew(raw)])
    labels = {"consumer": "g", "topic": "t"}
    counted = REGISTRY.get_sample_value("qv_bus_duplicate_deliveries_total", labels) or 0.0
    assert sub.fetch(10, 0.5) == [] and sub.duplicates == 1  # not applied twice
    # what operators see at /metrics
    assert REGISTRY.get_sample_value("qv_bus_duplicate_deliveries_total", labels) == counted + 1
    sub._fetch = real
    again = sub.fetch(10, 3.0)  # a nacked message still comes back
    assert [(m.offset, m.deliveries) for m in again] == [(second.offset, 2)]
    sub.ack(again[0])
    sub.close()


def test_close_gives_back_what_a_pull_that_outlived_its_fetch_left_in_the_client(
    broker: Any,
) -> None:
    broker.create_topic("t")
    sub = broker.subscribe("t", "g")
    pull = sub._subs[0]

    async def outlived() -> None:  # a pull request nobody fetches from any more
        request = json.dumps({"batch": 1, "expires": 5_000_000_000}).encode()
        await pull._nc.publish(pull._nms, request, pull._deliver)

    broker._run(outlived())
    broker.publish("t", b"x", key="A")  # delivered into the client's queue, never fetched
    for _ in range(50):
        if pull.pending_msgs:
            break
        time.sleep(0.02)
    assert pull.pending_msgs == 1
    sub.close()
    again = broker.subscribe("t", "g")  # at once, not after the 30 s ack wait
    (message,) = again.fetch(10, 3.0)
    assert (message.value, message.deliveries) == (b"x", 2)
    again.ack(message)
    again.close()
