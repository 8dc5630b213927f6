"""Codecs: every event type round-trips in JSON, Avro and Protobuf; wire format; evolution."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from typing import Any

import fastavro
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantivista.bus.codecs import CODECS, CodecName, Codecs
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
from quantivista.bus.frames import from_ipc, to_ipc
from quantivista.bus.registry import SchemaCompatibilityError, SchemaRegistry
from quantivista.bus.schemas import avro_schema
from quantivista.errors import BusError
from quantivista.model.workflow import DataIngestedPayload, DataSourceType, IngestionMode

from .conftest import MemoryState

AT = datetime(2026, 11, 23, 15, 0, 0, 123456, tzinfo=UTC)
BARS = pl.DataFrame(
    {
        "symbol": ["AAPL", "MSFT"],
        "ts": [AT, AT],
        "close": [191.5, 412.25],
        "volume": [1200.0, 800.0],
    }
)
EVENTS: list[Event] = [
    BarsIngested(
        occurred_at=AT, job_id="job-1", source="yahoo", timeframe="1d", symbols=["A", "B"],
        rows_written=10, rows_unchanged=2, first_ts=AT, last_ts=None,
    ),
    BarsQuarantined(occurred_at=AT, job_id="job-1", source="yahoo", rows=3, rules={"x": 3}),
    ActionsIngested(occurred_at=AT, source="lean", symbols=["AAPL"], rows=4),
    BarsStreamed(occurred_at=AT, source="finnhub", timeframe="1m", correction=True,
                 rows=[{"symbol": "A", "ts": "2026-11-23T15:00:00+00:00", "close": 1.5}]),
    TradesBatch(occurred_at=AT, source="finnhub", rows=2, symbols=["AAPL"], trades=b"\x00\xff"),
    BarBatch(occurred_at=AT, source="stream", stage="raw", timeframe="1m", rows=2,
             symbols=["AAPL", "MSFT"], bars=to_ipc(BARS), correction=True, first_ts=AT,
             last_ts=AT, offsets="trades.finnhub:1-9"),
    ActionsBatch(occurred_at=AT, source="lean", rows=0, symbols=[], actions=b""),
    DataIngestedEvent(occurred_at=AT, timestamp=AT, data_ingested=DataIngestedPayload(
        job_id="j", source_id="positions", source_type=DataSourceType.PORTFOLIO_MANAGEMENT,
        ingestion_mode=IngestionMode.ON_DEMAND, records_processed=9, records_failed=1,
        quality_score=0.9, processing_time_ms=12.5, data_categories=["positions"])),
    WorkflowRecords(occurred_at=AT, tenant_id="acme", source_id="fills", offset=7,
                    records=[{"trade_id": "T1", "qty": 5}]),
]  # fmt: skip


def test_the_samples_cover_every_event_type() -> None:
    assert {type(e).__name__ for e in EVENTS} == set(EVENT_TYPES)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_in_every_codec(event: Event, codec: CodecName) -> None:
    codecs = Codecs()
    value, headers = codecs.encode(event, codec)
    assert headers["qv-type"] == type(event).__name__
    assert codecs.decode(value, headers) == event
    # a consumer with its own registry instance on the same store still decodes by id
    if codec != "json":
        other = Codecs(codecs.registry)
        assert other.decode(value) == event


@pytest.mark.parametrize("codec", ["avro", "protobuf"])
def test_binary_codecs_use_the_confluent_wire_format(codec: CodecName) -> None:
    codecs = Codecs()
    value, _ = codecs.encode(EVENTS[0], codec)
    magic, schema_id = struct.unpack(">bI", value[:5])
    assert magic == 0
    entry = codecs.registry.by_id(schema_id)
    assert entry.subject == f"BarsIngested-{codec}"
    assert entry.version == 1


def test_bars_travel_as_arrow_ipc() -> None:
    event = EVENTS[5]
    assert isinstance(event, BarBatch)
    for codec in CODECS:
        codecs = Codecs()
        back = codecs.decode(codecs.encode(event, codec)[0])
        assert isinstance(back, BarBatch)
        assert from_ipc(back.bars).equals(BARS)


@given(
    job=st.text(min_size=1, max_size=20),
    symbols=st.lists(st.text(min_size=1, max_size=8), max_size=5),
    written=st.integers(min_value=0, max_value=2**62),
    rules=st.dictionaries(st.text(max_size=10), st.integers(0, 2**40), max_size=4),
)
def test_any_values_round_trip_in_every_codec(
    job: str, symbols: list[str], written: int, rules: dict[str, int]
) -> None:
    codecs = Codecs()
    events: list[Event] = [
        BarsIngested(occurred_at=AT, job_id=job, source="s", timeframe="1d", symbols=symbols,
                     rows_written=written, rows_unchanged=0),
        BarsQuarantined(occurred_at=AT, job_id=job, source="s", rows=written, rules=rules),
    ]  # fmt: skip
    for event in events:
        for codec in CODECS:
            assert codecs.decode(codecs.encode(event, codec)[0]) == event


@pytest.mark.parametrize(
    "value",
    [b"", b"{not json", b"\x07abc", b"\x00\x00\x00\x00\x01\x02", b'{"type": "Nope"}'],
)
def test_unreadable_messages_are_bus_errors(value: bytes) -> None:
    with pytest.raises(BusError):
        Codecs().decode(value)


def test_a_truncated_avro_body_is_a_bus_error() -> None:
    codecs = Codecs()
    value, _ = codecs.encode(EVENTS[0], "avro")
    with pytest.raises(BusError, match="Avro"):
        codecs.decode(value[:12])


def _older(schema: dict[str, Any], drop: str) -> dict[str, Any]:
    return {**schema, "fields": [f for f in schema["fields"] if f["name"] != drop]}


def test_data_written_with_an_older_avro_schema_is_read_with_defaults() -> None:
    registry = SchemaRegistry()
    old = _older(avro_schema(BarBatch), "offsets")  # version 1 had no `offsets`
    entry = registry.register("BarBatch-avro", old, "AVRO")
    record = {
        "event_id": "e1", "occurred_at": AT, "source": "s", "stage": "raw", "timeframe": "1m",
        "rows": 0, "symbols": [], "bars": b"", "correction": False, "first_ts": None,
        "last_ts": None,
    }  # fmt: skip
    sink = io.BytesIO()
    sink.write(struct.pack(">bI", 0, entry.schema_id))
    fastavro.schemaless_writer(sink, fastavro.parse_schema(old), record)
    codecs = Codecs(registry)
    event = codecs.decode(sink.getvalue())
    assert isinstance(event, BarBatch)
    assert event.offsets is None and event.source == "s"
    assert [v.version for v in registry.versions("BarBatch-avro")] == [1, 2]


def test_the_registry_refuses_schemas_that_cannot_read_the_latest() -> None:
    registry = SchemaRegistry()
    base = avro_schema(BarsIngested)
    registry.register("BarsIngested-avro", base, "AVRO")
    required = {**base, "fields": [*base["fields"], {"name": "region", "type": "string"}]}
    with pytest.raises(SchemaCompatibilityError, match="region was added without a default"):
        registry.register("BarsIngested-avro", required, "AVRO")
    narrowed = {
        **base,
        "fields": [
            {**f, "type": "int"} if f["name"] == "rows_written" else f for f in base["fields"]
        ],
    }
    with pytest.raises(SchemaCompatibilityError, match="rows_written: type changed from long"):
        registry.register("BarsIngested-avro", narrowed, "AVRO")
    widened = {**base, "fields": [*base["fields"], {"name": "note", "type": ["null", "string"],
                                                    "default": None}]}  # fmt: skip
    assert registry.register("BarsIngested-avro", widened, "AVRO").version == 2
    # registering a known schema again returns it, without a new version
    assert registry.register("BarsIngested-avro", base, "AVRO").version == 1
    assert len(registry.versions("BarsIngested-avro")) == 2


def test_protobuf_field_numbers_may_not_change_meaning() -> None:
    registry = SchemaRegistry()
    codecs = Codecs(registry)
    codecs.encode(EVENTS[0], "protobuf")
    latest = registry.versions("BarsIngested-protobuf")[-1].schema
    swapped = {**latest, "fields": [dict(f) for f in latest["fields"]]}
    swapped["fields"][2]["name"] = "renamed"
    with pytest.raises(SchemaCompatibilityError, match="field 3 changed its name"):
        registry.register("BarsIngested-protobuf", swapped, "PROTOBUF")


def test_a_registry_on_a_state_store_is_shared_between_instances() -> None:
    state = MemoryState()
    writer = Codecs(SchemaRegistry(state))
    value, _ = writer.encode(EVENTS[1], "avro")
    reader = Codecs(SchemaRegistry(state))  # another process, same catalog
    assert reader.decode(value) == EVENTS[1]
