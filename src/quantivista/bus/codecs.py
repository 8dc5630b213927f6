"""Codecs of bus messages: JSON (orjson), Avro (fastavro) and Protobuf, for every event type.

    codecs = Codecs(registry)
    value, headers = codecs.encode(event, "avro")
    event = codecs.decode(value, headers)

JSON is the readable envelope (`bus.envelope`: type, version, payload; bytes as base64).
Avro and Protobuf use the Confluent wire format: magic byte 0, the 4-byte big-endian schema
id from the registry, then (Protobuf) the message-index list `[0]` as one 0 byte, then the
body. A consumer resolves the id to the writer's schema, so Avro data written by an older
version of an event is read into the current class (added fields take their defaults).
Headers say the type and codec (`qv-type`, `content-type`); decoding works without them.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Literal

import fastavro
import orjson

from quantivista.bus.envelope import Envelope
from quantivista.bus.events import EVENT_TYPES, Event
from quantivista.bus.registry import SchemaRegistry
from quantivista.bus.schemas import (
    avro_schema,
    from_avro_record,
    from_proto,
    proto_schema,
    to_avro_record,
    to_proto,
)
from quantivista.errors import BusUsageError, DecodeError

__all__ = ["CODECS", "CodecName", "Codecs"]

CodecName = Literal["json", "avro", "protobuf"]
CODECS: tuple[CodecName, ...] = ("json", "avro", "protobuf")
_CONTENT = {
    "json": "application/json",
    "avro": "application/vnd.confluent.avro",
    "protobuf": "application/vnd.confluent.protobuf",
}
_MAGIC = 0


class Codecs:
    """Encode and decode events in any codec, with schemas kept in a registry."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or SchemaRegistry()
        self._ids: dict[tuple[type[Event], str], int] = {}
        self._parsed: dict[int, Any] = {}

    def schema_id(self, cls: type[Event], codec: CodecName) -> int:
        """Register the event type's schema for `codec` (once); return its id."""
        key = (cls, codec)
        found = self._ids.get(key)
        if found is None:
            if codec == "avro":
                entry = self.registry.register(f"{cls.__name__}-avro", avro_schema(cls), "AVRO")
            else:
                entry = self.registry.register(
                    f"{cls.__name__}-protobuf", proto_schema(cls), "PROTOBUF"
                )
            found = self._ids[key] = entry.schema_id
        return found

    def encode(
        self, event: Event, codec: CodecName = "json", *, key: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Return the message value and headers of `event` in `codec`."""
        if codec not in _CONTENT:  # before any use of the name (was a KeyError)
            raise BusUsageError("unknown codec", codec=codec)
        cls = type(event)
        headers = {
            "qv-type": cls.__name__,
            "qv-version": str(cls.schema_version),
            "content-type": _CONTENT[codec],
        }
        if codec == "json":
            return orjson.dumps(Envelope.of(event, key=key).model_dump(mode="json")), headers
        head = struct.pack(">bI", _MAGIC, self.schema_id(cls, codec))
        if codec == "avro":
            sink = io.BytesIO()
            sink.write(head)
            fastavro.schemaless_writer(sink, self._schema(self._ids[(cls, codec)]),
                                       to_avro_record(event))  # fmt: skip
            return sink.getvalue(), headers
        return head + b"\x00" + to_proto(event), headers

    def decode(self, value: bytes, headers: dict[str, str] | None = None) -> Event:
        """Return the event in a message value; `DecodeError` for anything unreadable."""
        if not value:
            raise DecodeError("empty message")
        if value[:1] == b"{":
            try:
                return Envelope.model_validate(orjson.loads(value)).open()
            except (orjson.JSONDecodeError, ValueError) as exc:
                raise DecodeError(f"not a JSON event envelope: {exc}") from None
        if value[0] != _MAGIC or len(value) < 5:
            raise DecodeError("unknown message format (no JSON envelope, no magic byte)")
        (schema_id,) = struct.unpack(">I", value[1:5])
        entry = self.registry.by_id(schema_id)
        type_name = entry.subject.rsplit("-", 1)[0]
        cls = EVENT_TYPES.get(type_name)
        if cls is None:
            raise DecodeError("unknown event type", type=type_name)
        if entry.format == "AVRO":
            reader = self._schema(self.schema_id(cls, "avro"))
            try:
                record = fastavro.schemaless_reader(
                    io.BytesIO(value[5:]), self._schema(schema_id), reader
                )
            except Exception as exc:  # truncated or corrupt body
                raise DecodeError(f"not a {type_name} Avro record: {exc}") from None
            assert isinstance(record, dict)
            return from_avro_record(cls, record)
        index_end = 6  # one message-index byte: [0], the first message of the file
        return from_proto(cls, value[index_end:])

    def _schema(self, schema_id: int) -> Any:
        parsed = self._parsed.get(schema_id)
        if parsed is None:
            parsed = self._parsed[schema_id] = fastavro.parse_schema(
                self.registry.by_id(schema_id).schema
            )
        return parsed
