"""A schema registry: versions per subject, ids, and a backward-compatibility check.

    registry = SchemaRegistry(state=catalog)          # kept in the catalog's state table
    schema_id = registry.register("BarBatch-avro", schema, "AVRO")

Subjects follow the record-name strategy (`<EventType>-avro`, `<EventType>-protobuf`). A new
version must be backward compatible with the latest one (consumers on the new schema read
data written with the old): Avro fields added without a default, or changed to a type the old
one cannot be promoted to, and Protobuf field numbers reused with another name, type or label
are refused with `SchemaCompatibilityError`, saying which field and why. Ids are derived from
the canonical schema text (the first 31 bits of its SHA-256), so processes agree on them
without a coordinator.

In a store, each subject takes a numbered slot and each version its own entry, both claimed
with the store's atomic insert-if-absent (`setdefault_state`: SQLite's write transaction, a
unique key in PostgreSQL). Processes registering at once therefore never overwrite each
other's versions, as they did when the whole table was one entry rewritten by each.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from quantivista.errors import BusError, DecodeError

__all__ = [
    "RegisteredSchema",
    "SchemaCompatibilityError",
    "SchemaRegistry",
    "StateStore",
    "avro_problems",
    "protobuf_problems",
]

Format = Literal["AVRO", "PROTOBUF"]
_STATE_KEY = "schema_registry"
_LEGACY_KEY = _STATE_KEY  # earlier releases kept the whole table in this one entry


class SchemaCompatibilityError(BusError):
    """A schema is not backward compatible with its subject's latest version."""


class StateStore(Protocol):
    """Where the registry keeps its table (the job catalog's state, on a platform)."""

    def get_state(self, key: str) -> dict[str, Any] | None: ...

    def setdefault_state(self, key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Keep `value` under `key` unless one is there; return the one kept (atomic)."""
        ...


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of a subject's schema."""

    subject: str
    version: int
    schema_id: int
    format: str
    schema: dict[str, Any]


def canonical(schema: dict[str, Any]) -> str:
    """Return the schema as sorted, compact JSON (what its id is computed from)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def schema_id_of(schema: dict[str, Any]) -> int:
    """Return the id of a schema: stable across processes."""
    digest = hashlib.sha256(canonical(schema).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class SchemaRegistry:
    """Subjects with versioned schemas, in memory or in a `StateStore`."""

    def __init__(self, state: StateStore | None = None) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._subjects: dict[str, list[RegisteredSchema]] = {}
        self._by_id: dict[int, RegisteredSchema] = {}
        self._slots = 0  # how many subject slots of the store this instance has read
        if state is not None:
            with self._lock:
                self._adopt_legacy(state)
                self._refresh(state)

    # -- the store: one entry per subject slot and per (subject, version) ------------------
    def _refresh(self, state: StateStore) -> None:
        """Read the subjects and versions other processes added since the last read."""
        while (slot := state.get_state(_slot_key(self._slots))) is not None:
            self._subjects.setdefault(slot["subject"], [])
            self._slots += 1
        for subject in self._subjects:
            self._refresh_subject(state, subject)

    def _refresh_subject(self, state: StateStore, subject: str) -> None:
        versions = self._subjects.setdefault(subject, [])
        while (doc := state.get_state(_version_key(subject, len(versions) + 1))) is not None:
            self._add(_entry(subject, doc))

    def _add(self, entry: RegisteredSchema) -> None:
        self._subjects.setdefault(entry.subject, []).append(entry)
        self._by_id.setdefault(entry.schema_id, entry)

    def _claim_subject(self, state: StateStore, subject: str) -> None:
        """List `subject` in the first free slot unless a slot names it (atomic per slot)."""
        while True:
            kept = state.setdefault_state(_slot_key(self._slots), {"subject": subject})
            self._subjects.setdefault(kept["subject"], [])
            self._slots += 1
            if kept["subject"] == subject:
                return

    def _adopt_legacy(self, state: StateStore) -> None:
        """Move the one-document table of earlier releases into slots, once (idempotent)."""
        legacy = state.get_state(_LEGACY_KEY)
        if not legacy or state.get_state(_slot_key(0)) is not None:
            return
        for subject, versions in legacy.get("subjects", {}).items():
            self._claim_subject(state, subject)
            for v in versions:
                state.setdefault_state(_version_key(subject, v["version"]), v)
        self._subjects.clear()
        self._slots = 0

    def register(self, subject: str, schema: dict[str, Any], fmt: Format) -> RegisteredSchema:
        """Add `schema` as the subject's next version (or return it if it is the latest).

        Raises `SchemaCompatibilityError` when it cannot read data of the latest version.
        Safe across processes sharing a store: each version is claimed with an atomic
        insert-if-absent; a process that loses a version to another checks its schema
        against the winner's and tries the next one.
        """
        sid = schema_id_of(schema)
        state = self._state
        with self._lock:
            if state is not None:
                self._refresh_subject(state, subject)
            while True:
                versions = self._subjects.get(subject, [])
                for known in versions:
                    if known.schema_id == sid:
                        return known
                if versions:
                    _check(subject, versions[-1], schema, fmt)
                entry = RegisteredSchema(subject, len(versions) + 1, sid, fmt, schema)
                if state is None:
                    self._add(entry)
                    return entry
                if not versions:
                    self._claim_subject(state, subject)
                kept = _entry(
                    subject,
                    state.setdefault_state(_version_key(subject, entry.version), _doc(entry)),
                )
                self._add(kept)
                if kept.schema_id == sid:
                    return kept

    def by_id(self, schema_id: int) -> RegisteredSchema:
        """Return the schema with `schema_id`; `DecodeError` when unknown."""
        found = self._by_id.get(schema_id)
        if found is None and self._state is not None:  # another process may have added it
            with self._lock:
                self._refresh(self._state)
            found = self._by_id.get(schema_id)
        if found is None:
            raise DecodeError("unknown schema id", schema_id=schema_id)
        return found

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Return every version of `subject`, oldest first."""
        return list(self._subjects.get(subject, []))

    def subjects(self) -> list[str]:
        """Return the subjects, sorted."""
        return sorted(s for s, versions in self._subjects.items() if versions)


def _slot_key(slot: int) -> str:
    return f"{_STATE_KEY}.subject.{slot}"


def _version_key(subject: str, version: int) -> str:
    return f"{_STATE_KEY}.version.{version}.{subject}"


def _doc(entry: RegisteredSchema) -> dict[str, Any]:
    return {
        "version": entry.version,
        "id": entry.schema_id,
        "format": entry.format,
        "schema": entry.schema,
    }


def _entry(subject: str, doc: dict[str, Any]) -> RegisteredSchema:
    return RegisteredSchema(subject, doc["version"], doc["id"], doc["format"], doc["schema"])


def _check(subject: str, latest: RegisteredSchema, schema: dict[str, Any], fmt: str) -> None:
    """Raise `SchemaCompatibilityError` unless `schema` can read data of `latest`."""
    if latest.format != fmt:
        raise SchemaCompatibilityError(
            "a subject keeps one format", subject=subject, was=latest.format, now=fmt
        )
    check = avro_problems if fmt == "AVRO" else protobuf_problems
    problems = check(schema, latest.schema)
    if problems:
        raise SchemaCompatibilityError(
            f"schema for {subject} is not backward compatible with version"
            f" {latest.version}: " + "; ".join(problems),
            subject=subject,
        )


# -- compatibility -----------------------------------------------------------------------------
_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _type_name(t: Any) -> str:
    if isinstance(t, dict):
        return str(t.get("type"))
    if isinstance(t, list):
        return "union"
    return str(t)


def _readable(writer: Any, reader: Any, where: str) -> list[str]:
    """Say why data written as `writer` cannot be read as `reader` (Avro resolution rules)."""
    if isinstance(writer, list):  # every branch the writer may use must resolve
        return [p for branch in writer for p in _readable(branch, reader, where)]
    if isinstance(reader, list):
        if any(not _readable(writer, branch, where) for branch in reader):
            return []
        return [f"{where}: {_type_name(writer)} fits no branch of the new union"]
    w, r = _type_name(writer), _type_name(reader)
    if w == "record" and r == "record":
        return avro_problems(reader, writer, where + ".")
    if w != r and r not in _PROMOTIONS.get(w, {w}):
        return [f"{where}: type changed from {w} to {r}"]
    if w == "array":
        return _readable(writer["items"], reader["items"], where + "[]")
    if w == "map":
        return _readable(writer["values"], reader["values"], where + "{}")
    return []


def avro_problems(new: dict[str, Any], old: dict[str, Any], prefix: str = "") -> list[str]:
    """Return why `new` cannot read data written with `old` (empty: backward compatible)."""
    problems: list[str] = []
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    for field in new.get("fields", []):
        name = prefix + field["name"]
        before = old_fields.get(field["name"])
        if before is None:
            if "default" not in field:
                problems.append(f"field {name} was added without a default")
            continue
        problems += _readable(before["type"], field["type"], f"field {name}")
    return problems


def protobuf_problems(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Return the field numbers `new` reuses with another name, type or label."""
    before = {f["number"]: f for f in old.get("fields", [])}
    problems = []
    for field in new.get("fields", []):
        prior = before.get(field["number"])
        if prior is None:
            continue
        for part in ("name", "type", "label"):
            if prior[part] != field[part]:
                problems.append(
                    f"field {field['number']} changed its {part} from {prior[part]!r}"
                    f" to {field[part]!r}"
                )
    return problems
