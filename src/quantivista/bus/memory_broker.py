"""The embedded broker: durable-for-the-process topics in memory, on the `Broker` contract.

The default when no broker URL is configured (`memory://`), and the reference the NATS and
Kafka backends are tested against: the same contract suite runs on each.
"""

from __future__ import annotations

import bisect
import heapq
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from uuid import uuid4

from quantivista.bus.base import (
    BrokerBase,
    Member,
    Message,
    StartAt,
    SubscriptionBase,
    dead_letter_topic,
    partition_of,
)
from quantivista.errors import BusUsageError

__all__ = ["MemoryBroker"]


@dataclass
class _Topic:
    partitions: int
    log: list[Message] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)  # epoch seconds, for replay by time
    by_partition: list[list[int]] = field(default_factory=list)  # log indexes per partition


@dataclass
class _Group:
    cursors: dict[int, int]  # partition -> next position in by_partition[p]
    pending: dict[int, tuple[float, str]] = field(default_factory=dict)  # offset -> (due, member)
    ready: list[tuple[float, int]] = field(default_factory=list)  # heap of (when, offset)
    deliveries: dict[int, int] = field(default_factory=dict)  # offset -> attempts so far


class MemoryBroker(BrokerBase):
    """Topics, groups, redelivery, replay and dead letters in this process's memory."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._cond = threading.Condition()

    # -- topics ------------------------------------------------------------------------------
    def create_topic(self, topic: str, *, partitions: int = 1) -> None:
        with self._cond:
            for name in (topic, dead_letter_topic(topic)):
                if name not in self._topics:
                    n = partitions if name == topic else 1
                    self._topics[name] = _Topic(n, by_partition=[[] for _ in range(n)])

    def topics(self) -> list[str]:
        with self._cond:
            return sorted(self._topics)

    def _topic(self, topic: str) -> _Topic:
        found = self._topics.get(topic)
        if found is None:
            raise BusUsageError("no such topic", topic=topic)
        return found

    def last_offset(self, topic: str) -> int:
        with self._cond:
            return len(self._topic(topic).log)

    # -- publish -----------------------------------------------------------------------------
    def publish_many(
        self, topic: str, items: Sequence[tuple[str | None, bytes, Mapping[str, str] | None]]
    ) -> list[int]:
        offsets = []
        with self._cond:
            if topic not in self._topics:
                self.create_topic(topic)
            t = self._topics[topic]
            now = time.time()
            stamp = datetime.fromtimestamp(now, UTC)
            for key, value, headers in items:
                p = partition_of(key, t.partitions)
                offset = len(t.log) + 1
                t.log.append(Message(topic, offset, bytes(value), key, dict(headers or {}),
                                     stamp, 1, p))  # fmt: skip
                t.stamps.append(now)
                t.by_partition[p].append(offset - 1)
                offsets.append(offset)
            self._cond.notify_all()
        return offsets

    # -- consume -----------------------------------------------------------------------------
    def _subscribe(
        self, topic: str, group: str, start: StartAt, member: Member
    ) -> _MemorySubscription:
        with self._cond:
            if topic not in self._topics:
                self.create_topic(topic)
            t = self._topics[topic]
            state = self._groups.get((topic, group))
            if state is None:
                first = self._first_index(t, start)
                cursors = {
                    p: bisect.bisect_left(t.by_partition[p], first) for p in range(t.partitions)
                }
                state = self._groups[(topic, group)] = _Group(cursors)
            mine = member.partitions(t.partitions)
        return _MemorySubscription(self, topic, group, state, mine, member)

    @staticmethod
    def _first_index(t: _Topic, start: StartAt) -> int:
        if start.latest:
            return len(t.log)
        if start.offset is not None:
            return max(start.offset - 1, 0)
        if start.time is not None:
            return bisect.bisect_left(t.stamps, start.time.timestamp())
        return 0

    def read(
        self,
        topic: str,
        start: StartAt | None = None,
        *,
        until_offset: int | None = None,
        until_time: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        with self._cond:
            t = self._topic(topic)
            first = self._first_index(t, start or StartAt())
            last = len(t.log)
            if until_offset is not None:
                last = min(last, until_offset)
            if until_time is not None:
                last = min(last, bisect.bisect_right(t.stamps, until_time.timestamp()))
            if limit is not None:
                last = min(last, first + limit)
            chosen = t.log[first:last]
        yield from chosen

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _MemorySubscription(SubscriptionBase[MemoryBroker]):
    def __init__(
        self,
        broker: MemoryBroker,
        topic: str,
        group: str,
        state: _Group,
        partitions: list[int],
        member: Member,
    ) -> None:
        super().__init__(broker, topic, group, member.max_deliver)
        self._state = state
        self._partitions = partitions
        self._ack_wait_s = member.ack_wait_s
        self._id = uuid4().hex
        self._closed = False

    def fetch(self, max_messages: int = 100, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        cond = self._broker._cond
        with cond:
            while True:
                out = self._take(max_messages)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self._closed:
                    return out
                cond.wait(min(remaining, self._next_due()))

    def _next_due(self) -> float:
        """Seconds until a pending or nacked message becomes deliverable again."""
        s, now = self._state, time.monotonic()
        dues = [due for due, _ in s.pending.values()] + [w for w, _ in s.ready[:1]]
        return max(min(dues) - now, 0.001) if dues else 3600.0

    def _take(self, limit: int) -> list[Message]:
        s, now = self._state, time.monotonic()
        t = self._broker._topics[self.topic]
        for offset, (due, _) in list(s.pending.items()):  # ack deadline passed: redeliver
            if due <= now:
                del s.pending[offset]
                heapq.heappush(s.ready, (now, offset))
        out: list[Message] = []
        skipped: list[tuple[float, int]] = []
        while s.ready and s.ready[0][0] <= now and len(out) < limit:
            item = heapq.heappop(s.ready)
            message = t.log[item[1] - 1]
            if message.partition in self._partitions:
                out.append(self._deliver(message, now))
            else:
                skipped.append(item)
        for item in skipped:
            heapq.heappush(s.ready, item)
        for p in self._partitions:
            positions = t.by_partition[p]
            while s.cursors[p] < len(positions) and len(out) < limit:
                message = t.log[positions[s.cursors[p]]]
                s.cursors[p] += 1
                out.append(self._deliver(message, now))
        out.sort(key=lambda m: m.offset)
        return out

    def _deliver(self, message: Message, now: float) -> Message:
        s = self._state
        count = s.deliveries.get(message.offset, 0) + 1
        s.deliveries[message.offset] = count
        s.pending[message.offset] = (now + self._ack_wait_s, self._id)
        return replace(message, deliveries=count)

    def ack(self, message: Message) -> None:
        with self._broker._cond:
            self._state.pending.pop(message.offset, None)
            self._state.deliveries.pop(message.offset, None)

    def _requeue(self, message: Message, delay_s: float) -> None:
        cond = self._broker._cond
        with cond:
            if self._state.pending.pop(message.offset, None) is not None:
                heapq.heappush(self._state.ready, (time.monotonic() + delay_s, message.offset))
            cond.notify_all()

    def close(self) -> None:
        cond = self._broker._cond
        with cond:
            self._closed = True
            s, now = self._state, time.monotonic()
            for offset, (_, holder) in list(s.pending.items()):
                if holder == self._id:
                    del s.pending[offset]
                    heapq.heappush(s.ready, (now, offset))
            cond.notify_all()
