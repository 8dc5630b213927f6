"""Avro and Protobuf schemas of the event types, derived from their pydantic fields.

One source of truth: an event class. Its fields map to

    str -> string      int -> long          float -> double     bool -> boolean
    bytes -> bytes     datetime -> long (timestamp-micros)       list[str] -> array<string>
    dict[str, int] -> map<long>             list[dict] -> array<string> (JSON objects)
    a nested pydantic model -> string (its JSON)
    X | None -> union [null, X] with default null (proto2 `optional`: presence is kept)
    a nested pydantic model -> string (its JSON; the model validates it on the way in)

Protobuf classes are built at run time from a descriptor (no generated code to keep in
step); field numbers follow declaration order, so a new field goes last.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Union, get_args, get_origin

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message as ProtoMessage
from pydantic import AwareDatetime, BaseModel

from quantivista.bus.events import Event
from quantivista.errors import BusUsageError, DecodeError

__all__ = [
    "FieldSpec",
    "avro_schema",
    "fields_of",
    "from_avro_record",
    "from_proto",
    "proto_class",
    "proto_schema",
    "to_avro_record",
    "to_proto",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One event field: its name, kind (see the module docstring) and nullability."""

    name: str
    kind: str  # string long double boolean bytes timestamp strings map_long json_list model
    optional: bool


def _kind(annotation: Any) -> tuple[str, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) != 1:
            raise BusUsageError("unsupported union field", annotation=str(annotation))
        return _kind(inner[0])[0], True
    simple = {str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes"}
    if annotation in simple:
        return simple[annotation], False
    if annotation in (datetime, AwareDatetime) or get_args(annotation)[:1] == (datetime,):
        return "timestamp", False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", False
    args = get_args(annotation)
    if origin is list and args == (str,):
        return "strings", False
    if origin is dict and args == (str, int):
        return "map_long", False
    if origin is list and get_origin(args[0]) is dict:
        return "json_list", False
    raise BusUsageError("unsupported event field type", annotation=str(annotation))


@cache
def fields_of(cls: type[Event]) -> tuple[FieldSpec, ...]:
    """Return the fields of an event type, in declaration order."""
    out = []
    for name, info in cls.model_fields.items():
        kind, optional = _kind(info.annotation)
        out.append(FieldSpec(name, kind, optional))
    return tuple(out)


# -- Avro ------------------------------------------------------------------------------------
_AVRO_TYPES: dict[str, Any] = {
    "string": "string",
    "long": "long",
    "double": "double",
    "boolean": "boolean",
    "bytes": "bytes",
    "timestamp": {"type": "long", "logicalType": "timestamp-micros"},
    "strings": {"type": "array", "items": "string"},
    "map_long": {"type": "map", "values": "long"},
    "json_list": {"type": "array", "items": "string"},
    "model": "string",
}


@cache
def _avro_schema(cls: type[Event]) -> str:
    fields = []
    for spec in fields_of(cls):
        avro: Any = _AVRO_TYPES[spec.kind]
        default = cls.model_fields[spec.name].default
        field: dict[str, Any] = {"name": spec.name, "type": avro}
        if spec.optional:
            field = {"name": spec.name, "type": ["null", avro], "default": None}
        elif isinstance(default, bool | int | float | str):
            field["default"] = default
        fields.append(field)
    return json.dumps(
        {
            "type": "record",
            "name": cls.__name__,
            "namespace": "quantivista.events",
            "doc": f"schema version {cls.schema_version}",
            "fields": fields,
        }
    )


def avro_schema(cls: type[Event]) -> dict[str, Any]:
    """Return the Avro record schema of an event type."""
    schema: dict[str, Any] = json.loads(_avro_schema(cls))
    return schema


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def to_avro_record(event: Event) -> dict[str, Any]:
    """Return the record fastavro writes for `event` (timestamps as microseconds)."""
    out: dict[str, Any] = {}
    for spec in fields_of(type(event)):
        value = getattr(event, spec.name)
        if value is not None and spec.kind == "timestamp":
            value = _micros(value)
        elif value is not None and spec.kind == "json_list":
            value = [json.dumps(v, default=str) for v in value]
        elif value is not None and spec.kind == "model":
            value = value.model_dump_json()
        out[spec.name] = value
    return out


def from_avro_record(cls: type[Event], record: dict[str, Any]) -> Event:
    """Return the event of a decoded Avro record (fields the class lacks are dropped)."""
    values: dict[str, Any] = {}
    for spec in fields_of(cls):
        if spec.name not in record:
            continue
        value = record[spec.name]
        if value is not None and spec.kind == "timestamp":
            value = (
                value.astimezone(UTC)
                if isinstance(value, datetime)
                else _EPOCH + timedelta(microseconds=value)
            )
        elif value is not None and spec.kind == "json_list":
            value = [json.loads(v) for v in value]
        elif value is not None and spec.kind == "model":
            value = json.loads(value)
        values[spec.name] = value
    return cls.model_validate(values)


# -- Protobuf --------------------------------------------------------------------------------
_F = descriptor_pb2.FieldDescriptorProto
_PROTO_TYPES = {
    "string": _F.TYPE_STRING,
    "long": _F.TYPE_INT64,
    "double": _F.TYPE_DOUBLE,
    "boolean": _F.TYPE_BOOL,
    "bytes": _F.TYPE_BYTES,
    "timestamp": _F.TYPE_INT64,
    "strings": _F.TYPE_STRING,
    "json_list": _F.TYPE_STRING,
    "model": _F.TYPE_STRING,
}


@cache
def _proto_file(cls: type[Event]) -> descriptor_pb2.FileDescriptorProto:
    name = cls.__name__
    file = descriptor_pb2.FileDescriptorProto(
        name=f"quantivista/events/{name}.proto", package="quantivista.events", syntax="proto2"
    )
    message = file.message_type.add(name=name)
    for number, spec in enumerate(fields_of(cls), start=1):
        field = message.field.add(name=spec.name, number=number)
        if spec.kind == "map_long":  # map<string, int64> is a repeated nested entry
            entry = message.nested_type.add(name=f"{_camel(spec.name)}Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
            field.type = _F.TYPE_MESSAGE
            field.type_name = f".quantivista.events.{name}.{entry.name}"
            field.label = _F.LABEL_REPEATED
        else:
            field.type = _PROTO_TYPES[spec.kind]
            repeated = spec.kind in ("strings", "json_list")
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    return file


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


_POOL = descriptor_pool.DescriptorPool()


@cache
def proto_class(cls: type[Event]) -> type[ProtoMessage]:
    """Return the Protobuf message class of an event type."""
    _POOL.Add(_proto_file(cls))
    descriptor = _POOL.FindMessageTypeByName(f"quantivista.events.{cls.__name__}")
    made: type[ProtoMessage] = message_factory.GetMessageClass(descriptor)
    return made


def proto_schema(cls: type[Event]) -> dict[str, Any]:
    """Return the Protobuf schema as registry data: every field's number, name, type, label."""
    message = _proto_file(cls).message_type[0]
    return {
        "syntax": "proto2",
        "message": f"quantivista.events.{cls.__name__}",
        "fields": [
            {"number": f.number, "name": f.name, "type": f.type, "label": f.label}
            for f in message.field
        ],
    }


def to_proto(event: Event) -> bytes:
    """Return `event` as Protobuf bytes."""
    message = proto_class(type(event))()
    for spec in fields_of(type(event)):
        value = getattr(event, spec.name)
        if value is None:
            continue
        if spec.kind == "timestamp":
            setattr(message, spec.name, _micros(value))
        elif spec.kind == "strings":
            getattr(message, spec.name).extend(value)
        elif spec.kind == "json_list":
            getattr(message, spec.name).extend(json.dumps(v, default=str) for v in value)
        elif spec.kind == "map_long":
            getattr(message, spec.name).update(value)
        elif spec.kind == "model":
            setattr(message, spec.name, value.model_dump_json())
        else:
            setattr(message, spec.name, value)
    data: bytes = message.SerializeToString()
    return data


def from_proto(cls: type[Event], data: bytes) -> Event:
    """Return the event of Protobuf bytes; `DecodeError` when they do not parse."""
    message = proto_class(cls)()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # DecodeError and friends
        raise DecodeError(f"not a {cls.__name__} Protobuf message: {exc}") from None
    values: dict[str, Any] = {}
    for spec in fields_of(cls):
        if spec.kind in ("strings", "json_list", "map_long"):
            value: Any = getattr(message, spec.name)
            if spec.kind == "strings":
                value = list(value)
            elif spec.kind == "json_list":
                value = [json.loads(v) for v in value]
            else:
                value = dict(value)
        elif message.HasField(spec.name):
            value = getattr(message, spec.name)
            if spec.kind == "timestamp":
                value = _EPOCH + timedelta(microseconds=value)
            elif spec.kind == "model":
                value = json.loads(value)
        else:
            continue
        values[spec.name] = value
    return cls.model_validate(values)
