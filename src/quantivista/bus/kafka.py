"""The Kafka backend of the `Broker` contract (confluent-kafka, librdkafka inside).

    broker = KafkaBroker("kafka://127.0.0.1:9092?prefix=qv")

A topic is one Kafka topic (`qv.bars.raw.1m`) with its partitions; the producer picks the
partition itself with `partition_of` (the same CRC-32 as every backend), acks=all and
idempotence keep one key's order. Topic offsets interleave the partitions' own offsets
(`interleave`). A group member is assigned its partitions (p % members == member), not
rebalanced by the broker, so it joins at once; its position is the group's committed offset.

Kafka keeps no per-message state, so ack/nack live in the subscription: a fetched message is
pending until acked; a nack or a passed ack deadline delivers it again from memory; the
group commits, per partition, the lowest offset still pending (so whatever was not acked goes
to the next member after a close or a crash: at least once). Delivery counts are kept by the
broker object, so they survive a re-subscribe in this process but not a new process.

The end of a partition is taken from a fetch (its EOF), never from ListOffsets, which some
Kafka-protocol brokers (Tansu) answer wrongly.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

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

__all__ = ["KafkaBroker"]

_CONSUMER = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,  # Tansu: the default 45 s makes every join wait 22 s
    "heartbeat.interval.ms": 1000,
    "fetch.wait.max.ms": 50,
}

_LOG = logging.getLogger("quantivista.bus.kafka")


class KafkaBroker(BrokerBase):
    """Durable topics on a Kafka-protocol broker."""

    dense_offsets = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout_s: float = 10.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        parts = self._configure(url, prefix, timeout_s)
        servers = parts.netloc.rsplit("@", 1)[-1] or "127.0.0.1:9092"
        self._common: dict[str, Any] = {
            "bootstrap.servers": servers,
            "log.connection.close": False,  # a broker closing idle connections is no news
            "logger": _LOG,  # librdkafka's lines go to logging, not raw to stderr
            **(config or {}),
        }
        self._admin = AdminClient(self._common)
        self._producer = Producer(
            {**self._common, "acks": "all", "enable.idempotence": True, "linger.ms": 2}
        )
        self._partitions: dict[str, int] = {}
        # (group, topic, offset) -> deliveries so far, for messages not yet acked
        self.deliveries: dict[tuple[str, str, int], int] = {}
        try:
            self._admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise BusError(f"cannot connect to Kafka at {servers}: {exc}") from None

    # -- names -------------------------------------------------------------------------------
    def name(self, topic: str) -> str:
        """Return the Kafka topic name of `topic`."""
        return f"{self.prefix}.{topic}"

    def group_id(self, group: str) -> str:
        return f"{self.prefix}.{group}"

    def consumer(
        self, group: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> Consumer:
        """Return a consumer with this broker's settings (a throwaway group when None)."""
        gid = self.group_id(group) if group else f"{self.prefix}.read-{uuid.uuid4().hex[:12]}"
        return Consumer({**self._common, **_CONSUMER, "group.id": gid, **(extra or {})})

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, topic: str, *, partitions: int = 1) -> None:
        wanted = [(topic, partitions), (dead_letter_topic(topic), 1)]
        futures = self._admin.create_topics(
            [NewTopic(self.name(t), num_partitions=n, replication_factor=1) for t, n in wanted]
        )
        for (t, _), future in zip(wanted, futures.values(), strict=True):
            try:
                future.result(self.timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BusError(f"cannot create topic {t}: {exc}", topic=t) from None
            self._partitions.pop(t, None)  # an existing topic keeps its own count

    def topics(self) -> list[str]:
        head = f"{self.prefix}."
        meta = self._admin.list_topics(timeout=self.timeout_s)
        return sorted(t[len(head) :] for t in meta.topics if t.startswith(head))

    def partitions(self, topic: str, *, create: bool = True) -> int:
        """Return the partition count of `topic`; create it (one partition) when missing."""
        known = self._partitions.get(topic)
        if known is not None:
            return known
        meta = self._admin.list_topics(self.name(topic), timeout=self.timeout_s)
        found = meta.topics.get(self.name(topic))
        if found is None or found.error is not None or not found.partitions:
            if not create:
                raise BusUsageError("no such topic", topic=topic)
            self.create_topic(topic)
            return self.partitions(topic, create=False)
        self._partitions[topic] = len(found.partitions)
        return self._partitions[topic]

    def ends(self, topic: str) -> list[int]:
        """Return each partition's end (the next offset to be written), read from a fetch."""
        n = self.partitions(topic, create=False)
        # a fresh consumer each time: librdkafka reports a partition's EOF once per consumer
        probe = self.consumer(extra={"enable.partition.eof": True})
        try:
            name = self.name(topic)
            tps = []
            for p in range(n):  # ListOffsets may be low (never high): fetch from there to EOF
                low, high = probe.get_watermark_offsets(
                    TopicPartition(name, p), timeout=self.timeout_s
                )
                tps.append(TopicPartition(name, p, max(high - 1, low, 0)))
            probe.assign(tps)
            ends: dict[int, int] = {}
            seen = {int(tp.partition): int(tp.offset) for tp in tps}  # past the last read
            deadline = time.monotonic() + self.timeout_s
            while len(ends) < n and time.monotonic() < deadline:
                for msg in probe.consume(500, 0.2):
                    err = msg.error()
                    p = int(msg.partition() or 0)
                    if err is not None and err.code() == KafkaError._PARTITION_EOF:
                        ends[p] = int(msg.offset() or 0)
                    elif err is not None:
                        raise BusError(f"fetch from {topic} failed: {err}", topic=topic)
                    else:
                        seen[p] = max(seen[p], int(msg.offset() or 0) + 1)
            # no EOF in time (a slow broker after a restart): what was read is the best known
            return [ends.get(p, seen[p]) for p in range(n)]
        finally:
            probe.close()

    def last_offset(self, topic: str) -> int:
        return last_interleaved(self.ends(topic))

    def delete_topic(self, topic: str) -> None:
        """Delete `topic` and its dead-letter topic."""
        names = [self.name(t) for t in (topic, dead_letter_topic(topic))]
        for future in self._admin.delete_topics(names).values():
            with contextlib.suppress(KafkaException):  # already gone
                future.result(self.timeout_s)
        self._partitions.pop(topic, None)

    def positions(self, topic: str, start: StartAt, partitions: list[int]) -> dict[int, int]:
        """Return where `start` is in each of `partitions` (Kafka offsets)."""
        n = self.partitions(topic)
        if start.latest:
            ends = self.ends(topic)
            return {p: ends[p] for p in partitions}
        if start.offset is not None:
            return {p: deinterleave(start.offset, p, n) for p in partitions}
        if start.time is not None:
            return self._positions_at(topic, start.time, partitions)
        return dict.fromkeys(partitions, 0)

    def _positions_at(self, topic: str, at: datetime, partitions: list[int]) -> dict[int, int]:
        # offsets_for_times is a hint (Tansu answers 0 past the end): scan from it to the first
        # message at or after `at`
        ms = int(at.timestamp() * 1000)
        ends = self.ends(topic)
        consumer = self.consumer()
        try:
            name = self.name(topic)
            hints = consumer.offsets_for_times(
                [TopicPartition(name, p, ms) for p in partitions], timeout=self.timeout_s
            )
            out: dict[int, int] = {}
            for tp in hints:
                p = int(tp.partition)
                hint = int(tp.offset) if int(tp.offset) >= 0 else ends[p]
                out[p] = _scan_to_time(consumer, name, p, min(hint, ends[p]), ends[p], ms)
            return out
        finally:
            consumer.close()

    # -- publish -----------------------------------------------------------------------------
    def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        n = self.partitions(topic)
        name = self.name(topic)
        offsets: list[int] = [0] * len(items)
        errors: list[str] = []

        def done(i: int) -> Any:
            def report(err: KafkaError | None, msg: KafkaMessage) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    offsets[i] = interleave(int(msg.offset() or 0), int(msg.partition() or 0), n)

            return report

        for i, (key, value, headers) in enumerate(items):
            while True:
                try:
                    self._producer.produce(
                        name,
                        value=value,
                        key=key.encode() if key is not None else None,
                        partition=partition_of(key, n),
                        headers=list(headers.items()) if headers else None,
                        on_delivery=done(i),
                    )
                    break
                except BufferError:  # the local queue is full: let it drain
                    self._producer.poll(0.05)
        left = self._producer.flush(self.timeout_s * 3)
        if left or errors:
            raise BusError(f"publish to {topic} failed: {errors[:1] or 'timed out'}", topic=topic)
        return offsets

    # -- consume -----------------------------------------------------------------------------
    def _subscribe(
        self, topic: str, group: str, start: StartAt, member: Member
    ) -> _KafkaSubscription:
        n = self.partitions(topic)
        mine = member.partitions(n)
        consumer = self.consumer(group)
        name = self.name(topic)
        committed = consumer.committed([TopicPartition(name, p) for p in mine], self.timeout_s)
        at = {int(tp.partition): int(tp.offset) for tp in committed if tp.offset >= 0}
        fresh = [p for p in mine if p not in at]
        if fresh:  # a new group: start where asked, and commit it so the group exists
            begin = self.positions(topic, start, fresh)
            consumer.commit(
                offsets=[TopicPartition(name, p, o) for p, o in begin.items()], asynchronous=False
            )
            at.update(begin)
        consumer.assign([TopicPartition(name, p, at[p]) for p in mine])
        return _KafkaSubscription(self, topic, group, consumer, at, n, member)

    def read(
        self,
        topic: str,
        start: StartAt | None = None,
        *,
        until_offset: int | None = None,
        until_time: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        n = self.partitions(topic, create=False)
        ends = self.ends(topic)
        if until_offset is not None:  # the partition's positions whose offsets are <= it
            ends = [min(e, deinterleave(until_offset + 1, p, n)) for p, e in enumerate(ends)]
        begin = self.positions(topic, start or StartAt(), list(range(n)))
        live = {p for p in range(n) if begin[p] < ends[p]}
        if not live or limit == 0:
            return
        consumer = self.consumer()
        heads: dict[int, list[Message]] = {p: [] for p in live}
        stop_ms = int(until_time.timestamp() * 1000) if until_time is not None else None
        count = 0
        try:
            consumer.assign([TopicPartition(self.name(topic), p, begin[p]) for p in live])
            deadline = time.monotonic() + self.timeout_s
            while live or any(heads.values()):
                # yield in offset order: the smallest head once every live partition has one
                while all(heads[p] for p in live) and any(heads.values()):
                    p = min((q for q in heads if heads[q]), key=lambda q: heads[q][0].offset)
                    yield heads[p].pop(0)
                    count += 1
                    if limit is not None and count >= limit:
                        return
                if not live:
                    break
                if time.monotonic() > deadline:
                    raise BusError("replay stalled before the end", topic=topic)
                for msg in consumer.consume(500, 0.2):
                    p = int(msg.partition() or 0)
                    if msg.error() is not None or p not in live:
                        continue
                    position = int(msg.offset() or 0)
                    if position >= ends[p]:
                        live.discard(p)
                        continue
                    stamp = msg.timestamp()[1]
                    if stop_ms is not None and stamp > stop_ms:
                        live.discard(p)
                        continue
                    heads[p].append(_message(topic, msg, n))
                    deadline = time.monotonic() + self.timeout_s
                    if position + 1 >= ends[p]:
                        live.discard(p)
        finally:
            consumer.close()

    def close(self) -> None:
        self._producer.flush(self.timeout_s)


def _scan_to_time(
    consumer: Consumer, name: str, partition: int, hint: int, end: int, ms: int
) -> int:
    """Return the first position from `hint` whose message is stamped at or after `ms`."""
    if hint >= end:
        return end
    consumer.assign([TopicPartition(name, partition, hint)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                position = int(msg.offset() or 0)
                if msg.timestamp()[1] >= ms:
                    return position
                if position + 1 >= end:
                    return end
        raise BusError("cannot find the offset of a time", topic=name)
    finally:
        consumer.unassign()


def _message(topic: str, msg: KafkaMessage, partitions: int, deliveries: int = 1) -> Message:
    raw_key = msg.key()
    key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = {k: (v.decode() if isinstance(v, bytes) else "") for k, v in pairs}
    partition = int(msg.partition() or 0)
    stamp_type, ms = msg.timestamp()
    value = msg.value()
    return Message(
        topic,
        interleave(int(msg.offset() or 0), partition, partitions),
        value if isinstance(value, bytes) else b"",
        key,
        headers,
        datetime.fromtimestamp(ms / 1000, UTC) if stamp_type else None,
        deliveries,
        partition,
    )


class _KafkaSubscription(SubscriptionBase[KafkaBroker]):
    def __init__(
        self,
        broker: KafkaBroker,
        topic: str,
        group: str,
        consumer: Consumer,
        positions: dict[int, int],
        partitions: int,
        member: Member,
    ) -> None:
        super().__init__(broker, topic, group, member.max_deliver)
        self._consumer = consumer
        self._n = partitions
        self._ack_wait_s = member.ack_wait_s
        self._next = dict(positions)  # partition -> next Kafka offset to fetch
        self._committed = dict(positions)
        self._pending: dict[int, tuple[Message, float]] = {}  # offset -> (message, due)
        self._closed = False

    def _position(self, message: Message) -> int:
        return deinterleave(message.offset, message.partition, self._n)

    def _commit(self) -> None:
        """Commit, per partition, the lowest pending position (or the next one to fetch)."""
        lowest = dict(self._next)
        for message, _ in self._pending.values():
            p = message.partition
            lowest[p] = min(lowest[p], self._position(message))
        changed = [p for p, o in lowest.items() if o != self._committed.get(p)]
        if not changed:
            return
        name = self._broker.name(self.topic)
        self._consumer.commit(
            offsets=[TopicPartition(name, p, lowest[p]) for p in changed], asynchronous=False
        )
        self._committed.update({p: lowest[p] for p in changed})

    def _deliver(self, message: Message, now: float) -> Message:
        counts = self._broker.deliveries
        key = (self.group, self.topic, message.offset)
        counts[key] = counts.get(key, 0) + 1
        delivered = replace(message, deliveries=counts[key])
        self._pending[message.offset] = (delivered, now + self._ack_wait_s)
        return delivered

    def fetch(self, max_messages: int = 100, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            return []
        self._commit()
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            due = sorted(
                (m for m, when in self._pending.values() if when <= now), key=lambda m: m.offset
            )[:max_messages]
            out = [self._deliver(m, now) for m in due]
            next_due = min((when for _, when in self._pending.values()), default=deadline)
            wait = 0.0 if out else max(min(deadline, next_due) - now, 0.0)
            room = max_messages - len(out)
            for msg in self._consumer.consume(room, wait) if room > 0 else []:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BusError(f"fetch from {self.topic} failed: {err}", topic=self.topic)
                p = int(msg.partition() or 0)
                self._next[p] = int(msg.offset() or 0) + 1
                out.append(self._deliver(_message(self.topic, msg, self._n), time.monotonic()))
            if out or time.monotonic() >= deadline:
                out.sort(key=lambda m: m.offset)
                return out

    def ack(self, message: Message) -> None:
        self._pending.pop(message.offset, None)
        self._broker.deliveries.pop((self.group, self.topic, message.offset), None)

    def _requeue(self, message: Message, delay_s: float) -> None:
        if message.offset in self._pending:
            self._pending[message.offset] = (message, time.monotonic() + delay_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._commit()  # what is still pending stays uncommitted: the next member gets it
        finally:
            self._consumer.close()
