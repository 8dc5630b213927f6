"""The `Broker` contract, run on every backend: in-memory, NATS JetStream and Kafka (Tansu)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from quantivista.bus.base import Broker, Message, StartAt, dead_letter_topic

pytestmark = pytest.mark.nats


def drain(sub, want: int, timeout_s: float = 5.0) -> list[Message]:  # type: ignore[no-untyped-def]
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        out.extend(sub.fetch(100, timeout_s=0.5))
    return out


def check_offsets(broker: Broker, offsets: list[int], keys: list[str]) -> None:
    """Offsets are unique, increase with each key (partition), and are 1..n where the backend
    numbers the whole topic densely (Kafka interleaves its partitions' own offsets)."""
    assert len(set(offsets)) == len(offsets) and min(offsets) >= 1
    for key in set(keys):
        mine = [o for o, k in zip(offsets, keys, strict=True) if k == key]
        assert mine == sorted(mine), key
    if getattr(broker, "dense_offsets", True):
        assert offsets == list(range(1, len(offsets) + 1))


def test_publish_returns_offsets_in_order_and_read_replays_them(broker: Broker) -> None:
    broker.create_topic("trades.sim", partitions=3)
    keys = [f"K{i % 4}" for i in range(10)]
    offsets = [
        broker.publish("trades.sim", f"m{i}".encode(), key=keys[i], headers={"n": str(i)})
        for i in range(10)
    ]
    check_offsets(broker, offsets, keys)
    assert broker.last_offset("trades.sim") == max(offsets)
    got = list(broker.read("trades.sim"))
    assert [m.offset for m in got] == sorted(offsets)
    by_offset = dict(zip(offsets, range(10), strict=True))
    assert [m.value for m in got] == [f"m{by_offset[m.offset]}".encode() for m in got]
    assert [m.key for m in got] == [keys[by_offset[m.offset]] for m in got]
    assert {m.headers["n"] for m in got} == {str(i) for i in range(10)}
    assert all(m.headers["n"] == str(by_offset[m.offset]) for m in got)
    assert "trades.sim" in broker.topics() and dead_letter_topic("trades.sim") in broker.topics()


def test_publish_many_keeps_order_and_one_key_stays_in_one_partition(broker: Broker) -> None:
    broker.create_topic("bars", partitions=4)
    items = [(f"S{i % 5}", f"{i}".encode(), None) for i in range(50)]
    check_offsets(broker, broker.publish_many("bars", items), [f"S{i % 5}" for i in range(50)])
    sub = broker.subscribe("bars", "g")
    got = drain(sub, 50)
    assert len(got) == 50
    per_key: dict[str, list[int]] = {}
    for m in got:
        assert m.key is not None
        per_key.setdefault(m.key, []).append(int(m.value))
        sub.ack(m)
    for key, values in per_key.items():
        assert values == sorted(values), key
        assert len({m.partition for m in got if m.key == key}) == 1


def test_publishes_started_without_waiting_keep_their_order(broker: Broker) -> None:
    broker.create_topic("bars", partitions=2)
    futures = [
        broker.publish_async("bars", [(f"S{i % 3}", f"{i}.{j}".encode(), None) for j in range(5)])
        for i in range(20)
    ]
    offsets = [o for f in futures for o in f.result(timeout=30)]
    check_offsets(broker, offsets, [f"S{i % 3}" for i in range(20) for _ in range(5)])
    assert offsets == sorted(offsets) or not getattr(broker, "dense_offsets", True)
    got = {m.offset: m.value for m in broker.read("bars")}
    want = [f"{i}.{j}".encode() for i in range(20) for j in range(5)]
    assert [got[o] for o in offsets] == want


def test_each_group_gets_everything_and_members_split_partitions(broker: Broker) -> None:
    broker.create_topic("t", partitions=4)
    broker.publish_many("t", [(f"S{i}", str(i).encode(), None) for i in range(40)])
    whole = drain(broker.subscribe("t", "all"), 40)
    assert sorted(int(m.value) for m in whole) == list(range(40))
    a = broker.subscribe("t", "split", member=0, members=2)
    b = broker.subscribe("t", "split", member=1, members=2)
    got_a, got_b = drain(a, 40, 2.0), drain(b, 40, 2.0)
    assert {m.partition % 2 for m in got_a} <= {0} and {m.partition % 2 for m in got_b} <= {1}
    assert sorted(int(m.value) for m in got_a + got_b) == list(range(40))


def test_acked_messages_are_not_redelivered_unacked_ones_are(broker: Broker) -> None:
    broker.create_topic("t")
    broker.publish_many("t", [(None, str(i).encode(), None) for i in range(6)])
    sub = broker.subscribe("t", "g", ack_wait_s=30)
    got = drain(sub, 6)
    for m in got[:4]:
        sub.ack(m)
    sub.close()  # the two unacked go back to the group
    again = broker.subscribe("t", "g", ack_wait_s=30)
    rest = drain(again, 2)
    assert sorted(int(m.value) for m in rest) == [4, 5]
    assert all(m.deliveries == 2 for m in rest)
    for m in rest:
        again.ack(m)
    broker.publish("t", b"6")
    assert [m.value for m in drain(again, 1)] == [b"6"]


def test_nack_redelivers_and_max_deliver_dead_letters_with_the_error(broker: Broker) -> None:
    broker.create_topic("t")
    poison = broker.publish("t", b"poison", key="AAPL", headers={"h": "1"})
    broker.publish("t", b"fine")
    sub = broker.subscribe("t", "g", max_deliver=3)
    attempts = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(attempts) < 3:
        for m in sub.fetch(10, timeout_s=0.5):
            if m.value == b"poison":
                attempts.append(m.deliveries)
                sub.nack(m, "ValueError: bad bar")
            else:
                sub.ack(m)
    assert attempts == [1, 2, 3]
    assert sub.fetch(10, timeout_s=0.5) == []  # dead-lettered: not delivered again
    dead = list(broker.read(dead_letter_topic("t")))
    assert len(dead) == 1
    letter = dead[0]
    assert (letter.value, letter.key) == (b"poison", "AAPL")
    assert letter.headers["qv-dlq-error"] == "ValueError: bad bar"
    assert letter.headers["qv-dlq-topic"] == "t"
    assert letter.headers["qv-dlq-offset"] == str(poison)
    assert letter.headers["qv-dlq-group"] == "g"
    assert letter.headers["h"] == "1"


def test_a_message_not_acked_in_time_is_redelivered(broker: Broker) -> None:
    broker.create_topic("t")
    broker.publish("t", b"x")
    sub = broker.subscribe("t", "g", ack_wait_s=1.0)
    first = drain(sub, 1)
    assert [m.deliveries for m in first] == [1]
    again = drain(sub, 1, timeout_s=6.0)
    assert [(m.value, m.deliveries) for m in again] == [(b"x", 2)]


def test_replay_from_an_offset_or_a_time_and_to_an_end(broker: Broker) -> None:
    broker.create_topic("t")
    broker.publish_many("t", [(None, str(i).encode(), None) for i in range(5)])
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    broker.publish_many("t", [(None, str(i).encode(), None) for i in range(5, 8)])
    assert [m.value for m in broker.read("t", StartAt(offset=4), until_offset=6)] == [
        b"3", b"4", b"5",
    ]  # fmt: skip
    assert [m.value for m in broker.read("t", StartAt(time=middle))] == [b"5", b"6", b"7"]
    assert [m.value for m in broker.read("t", until_time=middle)] == [
        str(i).encode() for i in range(5)
    ]
    assert [m.offset for m in broker.read("t", StartAt(offset=2), limit=2)] == [2, 3]
    assert list(broker.read("t", StartAt(offset=2), limit=0)) == []  # every backend alike
    assert all(
        m.timestamp is not None and abs(m.timestamp - middle) < timedelta(minutes=1)
        for m in broker.read("t")
    )


def test_a_new_group_starts_where_asked_an_old_one_where_it_left(broker: Broker) -> None:
    broker.create_topic("t")
    broker.publish_many("t", [(None, str(i).encode(), None) for i in range(4)])
    late = broker.subscribe("t", "late", start=StartAt(latest=True))
    mid = broker.subscribe("t", "mid", start=StartAt(offset=3))
    assert [m.value for m in drain(mid, 2)] == [b"2", b"3"]
    broker.publish("t", b"4")
    assert [m.value for m in drain(late, 1)] == [b"4"]
    first = broker.subscribe("t", "resume")
    for m in drain(first, 5)[:3]:
        first.ack(m)
    first.close()
    second = broker.subscribe("t", "resume", start=StartAt(latest=True))  # start ignored now
    assert sorted(m.value for m in drain(second, 2)) == [b"3", b"4"]
