"""The versioned envelope: every event type round-trips; unknown or newer schemas are refused."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista.bus.envelope import Envelope
from quantivista.bus.events import (
    EVENT_TYPES,
    ActionsBatch,
    ActionsIngested,
    BarBatch,
    BarsIngested,
    BarsQuarantined,
    BarsStreamed,
    DataIngestedEvent,
    Event,
    TradesBatch,
    WorkflowRecords,
)
from quantivista.errors import BusError
from quantivista.model.workflow import DataIngestedPayload, DataSourceType, IngestionMode

AT = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
EVENTS: list[Event] = [
    BarsIngested(
        occurred_at=AT, job_id="job-1", source="yahoo", timeframe="1d", symbols=["A", "B"],
        rows_written=10, rows_unchanged=2, first_ts=AT, last_ts=AT,
    ),
    BarsQuarantined(occurred_at=AT, job_id="job-1", source="yahoo", rows=3, rules={"x": 3}),
    ActionsIngested(occurred_at=AT, source="lean", symbols=["AAPL"], rows=4),
    BarsStreamed(occurred_at=AT, source="finnhub", timeframe="1m", correction=True,
                 rows=[{"symbol": "A", "ts": "2026-11-23T15:00:00+00:00", "close": 1.5}]),
    DataIngestedEvent(occurred_at=AT, timestamp=AT, data_ingested=DataIngestedPayload(
        job_id="j", source_id="positions", source_type=DataSourceType.PORTFOLIO_MANAGEMENT,
        ingestion_mode=IngestionMode.ON_DEMAND, records_processed=9, records_failed=1,
        quality_score=0.9, processing_time_ms=12.5, data_categories=["positions"])),
    WorkflowRecords(occurred_at=AT, tenant_id="acme", source_id="fills", offset=7,
                    records=[{"trade_id": "T1", "qty": 5}]),
    TradesBatch(occurred_at=AT, source="finnhub", rows=1, symbols=["A"], trades=b"\x00\xff"),
    BarBatch(occurred_at=AT, source="stream", stage="raw", timeframe="1m", rows=0, symbols=[],
             bars=b"\x01\x02\xfe", offsets="trades.finnhub:1-2"),
    ActionsBatch(occurred_at=AT, source="lean", rows=0, symbols=[], actions=b""),
]  # fmt: skip


def test_every_event_type_is_registered_for_decoding() -> None:
    assert set(EVENT_TYPES) == {type(e).__name__ for e in EVENTS}


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_an_event_round_trips_through_json(event: Event) -> None:
    envelope = Envelope.of(event, key="A", headers={"traceparent": "00-ab-cd-01"})
    back = Envelope.from_json(envelope.to_json())
    assert back == envelope
    assert back.open() == event
    assert (back.type, back.version, back.topic) == (type(event).__name__, 1, event.topic)


def test_a_newer_schema_is_refused_not_misread() -> None:
    envelope = Envelope.of(EVENTS[0]).model_copy(update={"version": 2})
    with pytest.raises(BusError, match="newer"):
        envelope.open()


def test_unknown_types_and_bad_payloads_are_bus_errors() -> None:
    base = Envelope.of(EVENTS[2])
    with pytest.raises(BusError, match="unknown event type"):
        base.model_copy(update={"type": "Nope"}).open()
    with pytest.raises(BusError, match="does not fit"):
        base.model_copy(update={"payload": {"rows": "many"}}).open()


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_bus_error(data: bytes) -> None:
    with contextlib.suppress(BusError):
        Envelope.from_json(data).open()
