"""Replay and dead letters: `qv replay` and `qv dlq list|show|replay`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quantivista.bus.base import DLQ_PREFIX, Broker, Message, StartAt
from quantivista.bus.codecs import Codecs
from quantivista.bus.deadletters import DLQ_HEADERS
from quantivista.bus.events import BarBatch, TradesBatch
from quantivista.errors import BusError, BusUsageError, InvalidInputError

__all__ = ["DistributionService", "describe"]

_REPLAY_GROUP = "qv-dlq-replay"


@dataclass
class ReplayResult:
    """What a replay re-published."""

    read: int = 0
    published: int = 0
    first_offset: int | None = None
    last_offset: int | None = None


def describe(message: Message, codecs: Codecs) -> dict[str, Any]:
    """Return one message as plain data: offset, key, time, type, rows, headers."""
    out: dict[str, Any] = {
        "topic": message.topic,
        "offset": message.offset,
        "key": message.key,
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        "bytes": len(message.value),
        "headers": dict(message.headers),
    }
    if "qv-dlq-error" in message.headers:  # a dead letter: why, up front
        out["reason"] = message.headers.get("qv-dlq-reason", "max_deliver")
        out["error"] = message.headers["qv-dlq-error"]
    try:
        event = codecs.decode(message.value, dict(message.headers))
        out["type"] = type(event).__name__
        if isinstance(event, BarBatch | TradesBatch):
            out["rows"] = event.rows
            out["symbols"] = event.symbols
    except BusError as exc:
        out["type"] = None
        out["decode_error"] = str(exc)
    return out


class DistributionService:
    """Replays of topics and the dead-letter topics' contents."""

    def __init__(self, broker: Broker, codecs: Codecs) -> None:
        self.broker = broker
        self.codecs = codecs

    def messages(
        self,
        topic: str,
        *,
        from_offset: int | None = None,
        from_time: datetime | None = None,
        to_offset: int | None = None,
        to_time: datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[Message]:
        """Return the stored messages of `topic` in a range (offsets and times inclusive)."""
        if from_offset is not None and from_time is not None:
            raise InvalidInputError("give --from-offset or --from-time, not both")
        if topic not in self.broker.topics():
            raise BusUsageError("no such topic", topic=topic)
        start = StartAt(offset=from_offset, time=from_time)
        return self.broker.read(
            topic, start, until_offset=to_offset, until_time=to_time, limit=limit
        )

    def replay(self, topic: str, *, into: str | None = None, **bounds: Any) -> ReplayResult:
        """Publish a range of `topic` again (onto `into`, default the topic itself)."""
        result = ReplayResult()
        target = into or topic
        batch: list[tuple[str | None, bytes, dict[str, str] | None]] = []
        for message in list(self.messages(topic, **bounds)):
            result.read += 1
            result.first_offset = result.first_offset or message.offset
            result.last_offset = message.offset
            headers = {**message.headers, "qv-replay-of": f"{topic}:{message.offset}"}
            batch.append((message.key, message.value, headers))
        if batch:
            result.published = len(self.broker.publish_many(target, batch))
        return result

    def dead_letter_topics(self) -> list[dict[str, Any]]:
        """Return every dead-letter topic with its message count."""
        return [
            {"topic": t, "messages": self.broker.last_offset(t)}
            for t in self.broker.topics()
            if t.startswith(DLQ_PREFIX)
        ]

    def replay_dead_letters(self, topic: str) -> ReplayResult:
        """Publish each dead letter of `topic` once more onto the topic it came from.

        A consumer group on the dead-letter topic remembers what was replayed: running it
        again replays only letters that arrived since.
        """
        if not topic.startswith(DLQ_PREFIX):
            topic = DLQ_PREFIX + topic
        sub = self.broker.subscribe(topic, _REPLAY_GROUP)
        result = ReplayResult()
        try:
            while True:
                messages = sub.fetch(100, timeout_s=0.5)
                if not messages:
                    break
                for message in messages:
                    origin = message.headers.get("qv-dlq-topic") or topic[len(DLQ_PREFIX) :]
                    headers = {
                        k: v
                        for k, v in message.headers.items()
                        if k not in DLQ_HEADERS and k != "qv-dlq-deliveries"
                    }
                    headers["qv-replay-of"] = f"{topic}:{message.offset}"
                    self.broker.publish(origin, message.value, key=message.key, headers=headers)
                    sub.ack(message)
                    result.read += 1
                    result.published += 1
                    result.first_offset = result.first_offset or message.offset
                    result.last_offset = message.offset
        finally:
            sub.close()
        return result
