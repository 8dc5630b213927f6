"""The versioned envelope events travel in, on any transport.

    {"type": "BarsIngested", "version": 1, "topic": "bars.ingested", "key": "AAPL",
     "event_id": "...", "produced_at": "...", "headers": {...}, "payload": {...}}

`version` is the event type's schema version: a consumer refuses an envelope newer than the
schemas it knows (`BusError`), rather than misread it. `key` orders a topic's messages
(a symbol, or a job id); `headers` carry tracing context.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from quantivista.bus.events import EVENT_TYPES, Event
from quantivista.errors import DecodeError
from quantivista.ops.tracing import inject

__all__ = ["Envelope"]


class Envelope(BaseModel):
    """One event with its type, schema version, ordering key and headers."""

    model_config = ConfigDict(frozen=True)

    type: str
    version: int = Field(ge=1)
    topic: str
    key: str | None = None
    event_id: str
    produced_at: AwareDatetime
    headers: dict[str, str] = Field(default_factory=dict)
    payload: dict[str, Any]

    @classmethod
    def of(
        cls,
        event: Event,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        produced_at: datetime | None = None,
    ) -> Envelope:
        """Wrap `event` (its payload as JSON-ready data)."""
        return cls(
            type=type(event).__name__,
            version=event.schema_version,
            topic=event.topic,
            key=key,
            event_id=event.event_id,
            produced_at=produced_at or event.occurred_at,
            headers=inject(headers),  # the publisher's trace context travels along
            payload=event.model_dump(mode="json"),
        )

    def open(self) -> Event:
        """Return the event inside; `DecodeError` for an unknown type or a newer schema."""
        cls = EVENT_TYPES.get(self.type)
        if cls is None:
            raise DecodeError("unknown event type", type=self.type, topic=self.topic)
        if self.version > cls.schema_version:
            raise DecodeError(
                "event schema is newer than this consumer knows",
                type=self.type,
                version=self.version,
                known=cls.schema_version,
            )
        try:
            return cls.model_validate(self.payload)
        except ValidationError as exc:
            raise DecodeError("event payload does not fit its schema", type=self.type) from exc

    def to_json(self) -> bytes:
        """Return the envelope as compact JSON bytes."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        """Parse an envelope; `DecodeError` when the bytes are not one."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise DecodeError("not an event envelope") from exc
