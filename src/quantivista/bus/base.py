"""The bus contracts shared by the in-memory, NATS and Kafka backends.

Two levels:

- `EventBus`: publish an event, every subscriber in this process gets it (the in-process
  notifications the runtime wires: cache invalidation, the API's fan-out).
- `Broker` (contract v2): durable topics of encoded messages. A message is published with a
  key (a symbol) that picks its partition, so one key's messages keep their order. Consumers
  join a group; each message is delivered to one member of the group until acked; a nack (or
  an ack deadline passing) redelivers it, and after `max_deliver` attempts it goes to the
  topic's dead-letter topic with the error. `read` replays a topic from an offset or a time.

Offsets are per topic, from 1, increasing in publish order within a partition. In memory and
on NATS they number the whole topic densely (the log index, the stream sequence); Kafka
numbers each partition on its own, so its backend interleaves them (`interleave`): dense on a
one-partition topic, unique and per-partition ordered on more. Every backend passes the same
contract suite (tests/bus/test_broker_contract.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar
from urllib.parse import SplitResult, urlsplit

from quantivista.bus.events import Event
from quantivista.bus.plumbing import url_prefix
from quantivista.errors import BusUsageError

__all__ = [
    "DLQ_PREFIX",
    "Broker",
    "EventBus",
    "Handler",
    "Member",
    "Message",
    "StartAt",
    "Subscription",
    "BrokerBase",
    "SubscriptionBase",
    "check_member",
    "dead_letter_headers",
    "dead_letter_topic",
    "deinterleave",
    "interleave",
    "last_interleaved",
    "partition_of",
    "topic_matches",
]

Handler = Callable[[Event], None]

DLQ_PREFIX = "dlq."


def topic_matches(pattern: str, topic: str) -> bool:
    """Match NATS-style: `*` is one token, `>` the rest (`bars.*`, `bars.>`, `>`)."""
    p_parts, t_parts = pattern.split("."), topic.split(".")
    for i, part in enumerate(p_parts):
        if part == ">":
            return len(t_parts) > i
        if i >= len(t_parts) or (part != "*" and part != t_parts[i]):
            return False
    return len(p_parts) == len(t_parts)


def partition_of(key: str | None, partitions: int) -> int:
    """Return the partition of `key`: stable across processes and runs (CRC-32)."""
    if partitions <= 1 or key is None:
        return 0
    return zlib.crc32(key.encode()) % partitions


def dead_letter_topic(topic: str) -> str:
    """Return the dead-letter topic of `topic` (`dlq.bars.raw.1m`)."""
    return topic if topic.startswith(DLQ_PREFIX) else DLQ_PREFIX + topic


def interleave(position: int, partition: int, partitions: int) -> int:
    """Return the topic offset of a partition's `position` (from 0) when partitions number
    their messages on their own (Kafka): unique, and dense when there is one partition."""
    return position * max(partitions, 1) + partition + 1


def deinterleave(offset: int, partition: int, partitions: int) -> int:
    """Return the first position of `partition` whose topic offset is at least `offset`."""
    n = max(partitions, 1)
    return max(-((partition + 1 - offset) // n), 0)  # ceil((offset - 1 - partition) / n)


def last_interleaved(ends: Sequence[int]) -> int:
    """Return the topic offset of the last message, given each partition's end (its next
    position, 0 when empty) when partitions number their messages on their own (0: empty)."""
    n = len(ends)
    return max((interleave(e - 1, p, n) for p, e in enumerate(ends) if e > 0), default=0)


def check_member(member: int, members: int) -> None:
    """Refuse a member index outside [0, members)."""
    if not 0 <= member < members:
        raise BusUsageError("member must be in [0, members)", member=member, members=members)


def dead_letter_headers(message: Message, group: str, error: str) -> dict[str, str]:
    """Return the message's headers plus its origin, the failing group and the error."""
    return {
        **message.headers,
        "qv-dlq-topic": message.topic,
        "qv-dlq-offset": str(message.offset),
        "qv-dlq-group": group,
        "qv-dlq-error": (error or "no error given")[:2000],
        "qv-dlq-deliveries": str(message.deliveries),
    }


class EventBus(Protocol):
    """Publish events; subscribers get them by topic pattern."""

    def publish(self, event: Event) -> None:
        """Deliver `event` to every subscriber whose pattern matches its topic."""
        ...

    def subscribe(self, pattern: str, handler: Handler, *, name: str | None = None) -> str:
        """Register `handler` for topics matching `pattern`; return a subscription id."""
        ...

    def unsubscribe(self, subscription_id: str) -> None:
        """Stop a subscription."""
        ...


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a durable topic, as a consumer or a replay sees it."""

    topic: str
    offset: int  # position in the topic, from 1
    value: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp: datetime | None = None  # when the broker stored it (UTC)
    deliveries: int = 1  # 1 on first delivery, more on redelivery
    partition: int = 0


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where a new consumer group (or a replay) starts: the first offset, a later one, a time,
    or only new messages (`latest`)."""

    offset: int | None = None
    time: datetime | None = None
    latest: bool = False

    @classmethod
    def earliest(cls) -> StartAt:
        return cls()


@dataclass(frozen=True, slots=True)
class Member:
    """A consumer group member's place (`index` of `count`) and its subscription settings."""

    index: int = 0
    count: int = 1
    ack_wait_s: float = 30.0
    max_deliver: int = 5

    def partitions(self, partitions: int) -> list[int]:
        """Return the member's partitions of a topic: p % count == index."""
        return [p for p in range(partitions) if p % self.count == self.index]


class Subscription(Protocol):
    """One member of a consumer group on one topic."""

    topic: str
    group: str

    def fetch(self, max_messages: int = 100, timeout_s: float = 1.0) -> list[Message]:
        """Return up to `max_messages` (waits at most `timeout_s` for the first)."""
        ...

    def ack(self, message: Message) -> None:
        """Mark `message` processed by the group: it is not delivered again."""
        ...

    def nack(self, message: Message, error: str = "", *, delay_s: float = 0.0) -> None:
        """Give `message` back for redelivery after `delay_s`; after the subscription's
        `max_deliver` attempts it goes to the dead-letter topic with `error` instead."""
        ...

    def close(self) -> None:
        """Leave the group (unacked messages are redelivered to other members)."""
        ...


class Broker(Protocol):
    """Durable, partitioned topics with consumer groups, redelivery, replay and dead letters."""

    url: str

    def create_topic(self, topic: str, *, partitions: int = 1) -> None:
        """Create `topic` (and its dead-letter topic) unless it exists."""
        ...

    def topics(self) -> list[str]:
        """Return the topics that exist, sorted."""
        ...

    def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Store a message durably; return its offset. One key's messages keep their order."""
        ...

    def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        """Publish (key, value, headers) items in order; return their offsets."""
        ...

    def publish_async(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> Future[list[int]]:
        """Start publishing items (in order after every earlier publish of this broker);
        return a future of their offsets, done when the broker has them durably."""
        ...

    def subscribe(
        self,
        topic: str,
        group: str,
        *,
        start: StartAt | None = None,
        member: int = 0,
        members: int = 1,
        ack_wait_s: float = 30.0,
        max_deliver: int = 5,
    ) -> Subscription:
        """Join `group` on `topic` as member `member` of `members`: the member gets the
        partitions p with p % members == member. A new group starts at `start` (earliest);
        an existing one goes on after its last acked message."""
        ...

    def read(
        self,
        topic: str,
        start: StartAt | None = None,
        *,
        until_offset: int | None = None,
        until_time: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """Replay stored messages from `start` (earliest) to the end as it is now, or to
        `until_offset`/`until_time` (inclusive); no group, no acks."""
        ...

    def last_offset(self, topic: str) -> int:
        """Return the offset of the topic's last message (0 when empty)."""
        ...

    def max_message_bytes(self) -> int | None:
        """Return the largest message (value and headers) the broker takes; None: no limit
        known."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class BrokerBase:
    """What every backend does the same way: `publish` is a one-item `publish_many`;
    `subscribe` checks the member and defaults the start, then `_subscribe`."""

    dense_offsets = True  # offsets 1, 2, 3... over the whole topic (False: `interleave`)
    url: str

    def _configure(self, url: str, prefix: str | None, timeout_s: float) -> SplitResult:
        """Keep a network backend's `url`, topic `prefix` (the URL's `?prefix=` unless given)
        and `timeout_s`; return the URL's parts."""
        self.url = url
        self.prefix = prefix or url_prefix(url)
        self.timeout_s = timeout_s
        return urlsplit(url)

    def max_message_bytes(self) -> int | None:
        return None

    def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        raise NotImplementedError

    def publish_async(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> Future[list[int]]:
        """Publish now, in the caller's thread (a backend that can pipeline overrides it)."""
        future: Future[list[int]] = Future()
        try:
            future.set_result(self.publish_many(topic, items))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        return self.publish_many(topic, [(key, value, headers)])[0]

    def subscribe(
        self,
        topic: str,
        group: str,
        *,
        start: StartAt | None = None,
        member: int = 0,
        members: int = 1,
        ack_wait_s: float = 30.0,
        max_deliver: int = 5,
    ) -> Subscription:
        check_member(member, members)
        joined = Member(member, members, ack_wait_s, max_deliver)
        return self._subscribe(topic, group, start or StartAt(), joined)

    def _subscribe(self, topic: str, group: str, start: StartAt, member: Member) -> Subscription:
        """Join `group` as `member` (checked), a new group at `start`, as `subscribe` says."""
        raise NotImplementedError


B = TypeVar("B", bound=BrokerBase)


class SubscriptionBase(Generic[B]):
    """What every backend's subscription does the same way: a nack of a message that has had
    its `max_deliver` attempts dead-letters it (client-side, so the letter holds the error)."""

    topic: str
    group: str
    max_deliver: int
    _broker: B

    def __init__(self, broker: B, topic: str, group: str, max_deliver: int) -> None:
        self.topic, self.group = topic, group
        self.max_deliver = max_deliver
        self._broker = broker

    def ack(self, message: Message) -> None:
        raise NotImplementedError

    def _requeue(self, message: Message, delay_s: float) -> None:
        """Give `message` back for redelivery after `delay_s`."""
        raise NotImplementedError

    def nack(self, message: Message, error: str = "", *, delay_s: float = 0.0) -> None:
        if message.deliveries >= self.max_deliver:
            headers = dead_letter_headers(message, self.group, error)
            self._broker.publish(
                dead_letter_topic(self.topic), message.value, key=message.key, headers=headers
            )
            self.ack(message)
            return
        self._requeue(message, delay_s)
