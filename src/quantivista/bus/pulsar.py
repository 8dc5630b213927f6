"""The Pulsar backend of the `Broker` contract (pulsar-client).

    broker = PulsarBroker("pulsar://127.0.0.1:6650?prefix=qv")

Built on what every Pulsar broker has, the `pulsar-lite` stand-in included (which has no
partitioned topics, no seek and no admin API): a partition is a topic of its own
(`persistent://public/default/qv.bars.raw.1m.p0`), the producer picks it with `partition_of`;
topic names and partition counts, and each group's start, are records on a metadata topic
(`qv.__topics`). A message's position in its partition is its ledger and entry id
(ledger * 2**20 + entry; batching off, so one message is one entry), interleaved into topic
offsets like Kafka's. A group is a Shared subscription per partition topic; the member's
partitions are p % members == member. A new group's start (an offset, a time, the latest) is
kept by skipping (and acking) earlier messages client-side, since seek is not available.
Ack deadlines and nack delays are held in the subscription (redelivery from memory, counts
kept by the broker object); what is unacked at close goes back to the subscription.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pulsar

from quantivista.bus.base import (
    BrokerBase,
    Member,
    Message,
    StartAt,
    SubscriptionBase,
    dead_letter_topic,
    deinterleave,
    interleave,
    last_interleaved,
    partition_of,
)
from quantivista.errors import BusError, BusUsageError

__all__ = ["PulsarBroker"]

_LEDGER = 2**20  # entries per ledger are far fewer (Pulsar rolls ledgers at 50,000)
_KEY = "qv-key"
_SEND_TIMEOUT_S = 30.0  # the producers' send timeout: a send without a receipt by then fails


def _available(reader: Any) -> bool:
    """Say whether `reader` has more; pulsar-lite answers UnknownError on an empty topic."""
    try:
        return bool(reader.has_message_available())
    except pulsar.exceptions.UnknownError:
        return False


class PulsarBroker(BrokerBase):
    """Durable topics on a Pulsar-protocol broker."""

    dense_offsets = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout_s: float = 10.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        parts = self._configure(url, prefix, timeout_s)
        scheme = "pulsar+ssl" if parts.scheme == "pulsar+ssl" else "pulsar"
        server = f"{scheme}://{parts.hostname or '127.0.0.1'}:{parts.port or 6650}"
        extra = dict(options or {})
        basic = extra.pop("basic_auth", None)
        if basic is not None:
            extra["authentication"] = pulsar.AuthenticationBasic(*basic)
        self._client = pulsar.Client(
            server,
            operation_timeout_seconds=max(int(timeout_s), 1),
            connection_timeout_ms=int(timeout_s * 1000),
            logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error),
            **extra,
        )
        self._producers: dict[str, Any] = {}
        self._meta: dict[str, Any] | None = None
        self._lock = threading.Lock()
        # (group, topic, offset) -> deliveries so far, for messages not yet acked
        self.deliveries: dict[tuple[str, str, int], int] = {}
        try:
            self._records()
        except Exception as exc:
            self._client.close()
            raise BusError(f"cannot connect to Pulsar at {server}: {exc}") from None

    # -- names and metadata ------------------------------------------------------------------
    def name(self, topic: str, partition: int) -> str:
        return f"persistent://public/default/{self.prefix}.{topic}.p{partition}"

    def _meta_topic(self) -> str:
        return f"persistent://public/default/{self.prefix}.__topics"

    def _records(self) -> dict[str, Any]:
        """Return the metadata records: topics -> partitions, (topic, group) -> start."""
        with self._lock:
            if self._meta is None:
                self._meta = {"topics": {}, "groups": {}, "ledgers": {}}
                reader = self._client.create_reader(self._meta_topic(), pulsar.MessageId.earliest)
                try:
                    while _available(reader):
                        self._apply(json.loads(reader.read_next(int(self.timeout_s * 1000)).data()))
                finally:
                    reader.close()
            return self._meta

    def _apply(self, record: dict[str, Any]) -> None:
        assert self._meta is not None
        if "ledger" in record:
            self._meta["ledgers"].setdefault(record["name"], int(record["ledger"]))
        elif "group" in record:
            self._meta["groups"].setdefault(f"{record['topic']}\0{record['group']}", record)
        else:
            self._meta["topics"].setdefault(record["topic"], int(record["partitions"]))

    def _record(self, record: dict[str, Any]) -> None:
        self._producer(self._meta_topic()).send(json.dumps(record).encode())
        with self._lock:
            self._apply(record)

    def base_ledger(self, name: str, seen: int | None = None) -> int | None:
        """Return the first ledger of partition topic `name`: recorded, or the ledger of its
        earliest message (`seen`, a receipt's ledger, when it is empty), then recorded."""
        known = self._records()["ledgers"].get(name)
        if known is not None:
            return int(known)
        reader = self._client.create_reader(name, pulsar.MessageId.earliest)
        try:
            first = reader.read_next(int(self.timeout_s * 1000)) if _available(reader) else None
        finally:
            reader.close()
        ledger = int(first.message_id().ledger_id()) if first is not None else seen
        if ledger is None:
            return None
        self._record({"name": name, "ledger": ledger})
        return int(self._records()["ledgers"][name])

    def position(self, name: str, mid: Any) -> int:
        """Return the position of message `mid` in partition topic `name`."""
        base = self.base_ledger(name, int(mid.ledger_id()))
        return (int(mid.ledger_id()) - (base or 0)) * _LEDGER + int(mid.entry_id())

    def message_id(self, name: str, position: int) -> Any:
        ledger, entry = divmod(position, _LEDGER)
        return pulsar.MessageId(-1, ledger + (self.base_ledger(name) or 0), entry, -1)

    def message(self, topic: str, msg: Any, partition: int, partitions: int) -> Message:
        """Return `msg` of `topic`'s `partition` as a contract message."""
        props = dict(msg.properties())
        key = props.pop(_KEY, None)
        name = self.name(topic, partition)
        return Message(
            topic,
            interleave(self.position(name, msg.message_id()), partition, partitions),
            bytes(msg.data()),
            key,
            props,
            datetime.fromtimestamp(msg.publish_timestamp() / 1000, UTC),
            int(msg.redelivery_count()) + 1,
            partition,
        )

    def _producer(self, name: str) -> Any:
        with self._lock:
            producer = self._producers.get(name)
            if producer is None:
                producer = self._producers[name] = self._client.create_producer(
                    name,
                    batching_enabled=False,
                    block_if_queue_full=True,
                    send_timeout_millis=int(_SEND_TIMEOUT_S * 1000),
                )
            return producer

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, topic: str, *, partitions: int = 1) -> None:
        known = self._records()["topics"]
        for name, n in ((topic, partitions), (dead_letter_topic(topic), 1)):
            if name not in known:
                self._record({"topic": name, "partitions": n})

    def topics(self) -> list[str]:
        return sorted(self._records()["topics"])

    def partitions(self, topic: str, *, create: bool = True) -> int:
        found = self._records()["topics"].get(topic)
        if found is None:
            if not create:
                raise BusUsageError("no such topic", topic=topic)
            self.create_topic(topic)
            return 1
        return int(found)

    def ends(self, topic: str) -> list[int]:
        """Return each partition's next position (its last message's + 1, 0 when empty)."""
        out = []
        for p in range(self.partitions(topic, create=False)):
            probe = self._client.subscribe(self.name(topic, p), f"qv-probe-{time.time_ns()}")
            try:
                last = probe.get_last_message_id()
                name = self.name(topic, p)
                out.append(self.position(name, last) + 1 if int(last.entry_id()) >= 0 else 0)
            except pulsar.exceptions.UnknownError:  # pulsar-lite, on an empty topic
                out.append(0)
            finally:
                probe.unsubscribe()
        return out

    def last_offset(self, topic: str) -> int:
        return last_interleaved(self.ends(topic))

    # -- publish -----------------------------------------------------------------------------
    def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        n = self.partitions(topic)
        receipts: list[tuple[int, Any] | None] = [None] * len(items)
        errors: list[str] = []
        landed = threading.Condition()
        left = [len(items)]

        def done(i: int, p: int) -> Any:
            def report(result: Any, mid: Any) -> None:  # on the client's thread: no calls back
                if result != pulsar.Result.Ok:
                    errors.append(str(result))
                else:
                    receipts[i] = (p, mid)
                with landed:
                    left[0] -= 1
                    landed.notify_all()

            return report

        for i, (key, value, headers) in enumerate(items):
            p = partition_of(key, n)
            props = dict(headers or {})
            if key is not None:
                props[_KEY] = key
            producer = self._producer(self.name(topic, p))
            producer.send_async(value, done(i, p), properties=props, partition_key=key)
        # Wait for every callback, not for flush(): the client pops a send from its queue before
        # it runs the callback (which needs the GIL), so flush() can return with receipts still
        # to come (apache/pulsar#5666). Every send ends in its callback, Ok or an error such as
        # Timeout once the producer's send timeout passes, so the wait is bounded by that.
        with landed:
            landed.wait_for(lambda: left[0] == 0, timeout=_SEND_TIMEOUT_S + self.timeout_s)
        if errors or None in receipts:
            missing = sum(r is None for r in receipts) - len(errors)
            reason = errors[:1] or f"{missing} receipt(s) missing"
            raise BusError(f"publish to {topic} failed: {reason}", topic=topic)
        return [
            interleave(self.position(self.name(topic, p), mid), p, n)
            for p, mid in (r for r in receipts if r is not None)
        ]

    # -- consume -----------------------------------------------------------------------------
    def _start(self, topic: str, group: str, start: StartAt) -> dict[str, Any]:
        """Return the group's start record, writing it on the group's first subscribe."""
        found = self._records()["groups"].get(f"{topic}\0{group}")
        if found is not None:
            return dict(found)
        record: dict[str, Any] = {"topic": topic, "group": group}
        if start.latest:
            record["positions"] = self.ends(topic)
        elif start.offset is not None:
            n = self.partitions(topic)
            record["positions"] = [deinterleave(start.offset, p, n) for p in range(n)]
        elif start.time is not None:
            record["time_ms"] = int(start.time.timestamp() * 1000)
        self._record(record)
        return self._records()["groups"][f"{topic}\0{group}"]  # type: ignore[no-any-return]

    def _subscribe(
        self, topic: str, group: str, start: StartAt, member: Member
    ) -> _PulsarSubscription:
        n = self.partitions(topic)
        begin = self._start(topic, group, start)
        mine = member.partitions(n)
        consumer = self._client.subscribe(
            [self.name(topic, p) for p in mine],
            f"{self.prefix}.{group}",
            consumer_type=pulsar.ConsumerType.Shared,
            initial_position=pulsar.InitialPosition.Earliest,
            receiver_queue_size=1000,
        )
        return _PulsarSubscription(self, topic, group, consumer, n, begin, member)

    def _partition_messages(
        self, topic: str, p: int, n: int, begin: int, end: int, since_ms: int | None
    ) -> Iterator[Message]:
        if begin >= end:
            return
        name = self.name(topic, p)
        reader = self._client.create_reader(
            name, self.message_id(name, begin), start_message_id_inclusive=True
        )
        try:
            while _available(reader):
                msg = reader.read_next(int(self.timeout_s * 1000))
                message = self.message(topic, msg, p, n)
                if self.position(name, msg.message_id()) >= end:
                    return
                if since_ms is None or msg.publish_timestamp() >= since_ms:
                    yield message
        finally:
            reader.close()

    def read(
        self,
        topic: str,
        start: StartAt | None = None,
        *,
        until_offset: int | None = None,
        until_time: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        begin = start or StartAt()
        ends = self.ends(topic)
        n = len(ends)
        if begin.latest:
            return
        if until_offset is not None:
            ends = [min(e, deinterleave(until_offset + 1, p, n)) for p, e in enumerate(ends)]
        firsts = [
            deinterleave(begin.offset, p, n) if begin.offset is not None else 0 for p in range(n)
        ]
        since = int(begin.time.timestamp() * 1000) if begin.time is not None else None
        merged = heapq.merge(
            *(self._partition_messages(topic, p, n, firsts[p], ends[p], since) for p in range(n)),
            key=lambda m: m.offset,
        )
        count = 0
        for message in merged:
            if limit is not None and count >= limit:
                return
            if until_time is not None and message.timestamp and message.timestamp > until_time:
                continue
            yield message
            count += 1

    def close(self) -> None:
        for producer in list(self._producers.values()):
            producer.flush()
        self._client.close()


class _PulsarSubscription(SubscriptionBase[PulsarBroker]):
    def __init__(
        self,
        broker: PulsarBroker,
        topic: str,
        group: str,
        consumer: Any,
        partitions: int,
        begin: dict[str, Any],
        member: Member,
    ) -> None:
        super().__init__(broker, topic, group, member.max_deliver)
        self._consumer = consumer
        self._n = partitions
        self._positions: list[int] | None = begin.get("positions")
        self._since_ms: int | None = begin.get("time_ms")
        self._ack_wait_s = member.ack_wait_s
        self._pending: dict[int, tuple[Message, Any, float]] = {}  # offset -> (msg, raw, due)

    def _partition_of(self, msg: Any) -> int:
        name = str(msg.topic_name())
        return int(name.rsplit(".p", 1)[-1])

    def _before_start(self, msg: Any, p: int) -> bool:
        if self._positions is not None:
            name = self._broker.name(self.topic, p)
            return self._broker.position(name, msg.message_id()) < self._positions[p]
        return self._since_ms is not None and msg.publish_timestamp() < self._since_ms

    def _deliver(self, message: Message, raw: Any, now: float) -> Message:
        counts = self._broker.deliveries
        key = (self.group, self.topic, message.offset)
        counts[key] = max(counts.get(key, 0) + 1, message.deliveries)
        delivered = replace(message, deliveries=counts[key])
        self._pending[message.offset] = (delivered, raw, now + self._ack_wait_s)
        return delivered

    def fetch(self, max_messages: int = 100, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        out: list[Message] = []
        while True:
            now = time.monotonic()
            for message, raw, when in sorted(self._pending.values(), key=lambda x: x[0].offset):
                if when <= now and len(out) < max_messages:
                    out.append(self._deliver(message, raw, now))
            if len(out) < max_messages:
                next_due = min((w for _, _, w in self._pending.values()), default=deadline)
                wait = 0.0 if out else max(min(deadline, next_due) - now, 0.0)
                self._receive(out, max_messages, wait)
            if out or time.monotonic() >= deadline:
                out.sort(key=lambda m: m.offset)
                return out

    def _receive(self, out: list[Message], max_messages: int, wait_s: float) -> None:
        timeout_ms = max(int(wait_s * 1000), 10)
        while len(out) < max_messages:
            try:
                raw = self._consumer.receive(timeout_ms)
            except pulsar.Timeout:
                return
            p = self._partition_of(raw)
            if self._before_start(raw, p):
                self._consumer.acknowledge(raw)
                continue
            message = self._broker.message(self.topic, raw, p, self._n)
            out.append(self._deliver(message, raw, time.monotonic()))
            timeout_ms = 10  # the first waited; the rest are what is already here

    def ack(self, message: Message) -> None:
        held = self._pending.pop(message.offset, None)
        self._broker.deliveries.pop((self.group, self.topic, message.offset), None)
        if held is not None:
            self._consumer.acknowledge(held[1])

    def _requeue(self, message: Message, delay_s: float) -> None:
        held = self._pending.get(message.offset)
        if held is not None:
            self._pending[message.offset] = (held[0], held[1], time.monotonic() + delay_s)

    def close(self) -> None:
        self._pending.clear()
        self._consumer.close()  # the unacked go back to the subscription
