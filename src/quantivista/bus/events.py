"""Events the platform publishes. Topics are dot-separated, NATS style."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, ClassVar
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from quantivista.model.workflow import DataIngestedPayload

__all__ = [
    "EVENT_TYPES",
    "ActionsBatch",
    "ActionsIngested",
    "BarBatch",
    "BarsIngested",
    "BarsQuarantined",
    "BarsStreamed",
    "DataIngestedEvent",
    "Event",
    "WorkflowRecords",
    "TradesBatch",
]


class Event(BaseModel):
    """Base of every event: an id, when it happened, its topic and its schema version.

    Raise `schema_version` when a field changes meaning or a required one is added;
    consumers refuse versions newer than they know (see `bus.envelope`).
    """

    # bytes fields (Arrow IPC batches) travel in JSON as base64 text
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64")
    topic: ClassVar[str] = "event"
    schema_version: ClassVar[int] = 1

    event_id: str = Field(default_factory=lambda: uuid4().hex)
    occurred_at: AwareDatetime

    @model_validator(mode="before")
    @classmethod
    def _bytes_from_base64(cls, data: Any) -> Any:
        """Take base64 text for bytes fields (what the JSON form of an event carries)."""
        if not isinstance(data, dict):
            return data
        names = [n for n, f in cls.model_fields.items() if f.annotation is bytes]
        texts = {n: data[n] for n in names if isinstance(data.get(n), str)}
        if not texts:
            return data
        # pydantic writes URL-safe base64 without padding; standard base64 is read too
        return {
            **data,
            **{n: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)) for n, t in texts.items()},
        }


class BarsIngested(Event):
    """New or changed bars landed in the store."""

    topic: ClassVar[str] = "bars.ingested"

    job_id: str
    source: str
    timeframe: str
    symbols: list[str]
    rows_written: int
    rows_unchanged: int
    first_ts: datetime | None = None
    last_ts: datetime | None = None


class BarsQuarantined(Event):
    """Rows failed validation and went to quarantine."""

    topic: ClassVar[str] = "bars.quarantined"

    job_id: str
    source: str
    rows: int
    rules: dict[str, int]


class ActionsIngested(Event):
    """New or changed corporate actions were stored."""

    topic: ClassVar[str] = "actions.ingested"

    source: str
    symbols: list[str]
    rows: int


class BarsStreamed(Event):
    """Bars of a live feed (a micro-batch), carried in the event itself.

    `rows` hold canonical bar fields as JSON-ready values (ts as ISO text); `correction`
    marks bars that replace ones already sent (a late trade amended its minute).
    """

    topic: ClassVar[str] = "bars.streamed"

    source: str
    timeframe: str
    rows: list[dict[str, Any]]
    correction: bool = False


class DataIngestedEvent(Event):
    """A reporting-side ingestion job finished (succeeded, partial or failed)."""

    topic: ClassVar[str] = "data.ingested"

    timestamp: AwareDatetime
    data_ingested: DataIngestedPayload


class WorkflowRecords(Event):
    """Records a workflow publishes for a REAL_TIME_STREAM source (one micro-batch).

    `offset` is the producer's sequence number of the first record: the lake rows' lineage.
    """

    topic: ClassVar[str] = "workflow.records"

    tenant_id: str
    source_id: str
    records: list[dict[str, Any]]
    offset: int = Field(default=0, ge=0)


class TradesBatch(Event):
    """Trades of a live feed (a micro-batch) as one Arrow IPC stream (`bus.frames`)."""

    topic: ClassVar[str] = "trades"

    source: str
    rows: int
    symbols: list[str]
    trades: bytes  # Arrow IPC: symbol, ts, price, size, provider


class BarBatch(Event):
    """Bars of one stage (raw, normalized, enriched) as one Arrow IPC stream.

    `correction` marks bars that replace ones already sent (a late trade amended its
    minute); `offsets` names the input messages the batch came from (for idempotent
    consumers and lineage), as `topic:first-last`.
    """

    topic: ClassVar[str] = "bars"

    source: str
    stage: str
    timeframe: str
    rows: int
    symbols: list[str]
    bars: bytes  # Arrow IPC in the canonical bar schema (+ enrichment columns)
    correction: bool = False
    first_ts: datetime | None = None
    last_ts: datetime | None = None
    offsets: str | None = None


class ActionsBatch(Event):
    """Corporate actions as one Arrow IPC stream in the canonical action schema."""

    topic: ClassVar[str] = "actions"

    source: str
    rows: int
    symbols: list[str]
    actions: bytes


# every event type by name, for decoding envelopes
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        BarsIngested,
        BarsQuarantined,
        ActionsIngested,
        BarsStreamed,
        DataIngestedEvent,
        WorkflowRecords,
        TradesBatch,
        BarBatch,
        ActionsBatch,
    )
}
