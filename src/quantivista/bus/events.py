"""Events the platform publishes. Topics are dot-separated, NATS style."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["ActionsIngested", "BarsIngested", "BarsQuarantined", "Event"]


class Event(BaseModel):
    """Base of every event: an id, when it happened, and its topic."""

    model_config = ConfigDict(frozen=True)
    topic: ClassVar[str] = "event"

    event_id: str = Field(default_factory=lambda: uuid4().hex)
    occurred_at: AwareDatetime


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
