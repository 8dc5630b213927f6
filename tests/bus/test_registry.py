"""The schema registry in a shared store: processes registering at once lose nothing."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from quantivista.bus.registry import (
    RegisteredSchema,
    SchemaCompatibilityError,
    SchemaRegistry,
    StateStore,
    schema_id_of,
)

from .conftest import MemoryState

PROCESSES = 4
ROUNDS = 6
BASE: dict[str, Any] = {
    "type": "record",
    "name": "Probe",
    "fields": [{"name": "a", "type": "long"}],
}


def _with_field(name: str) -> dict[str, Any]:
    extra = {"name": name, "type": ["null", "string"], "default": None}
    return {**BASE, "fields": [*BASE["fields"], extra]}


def _open(where: tuple[str, ...]) -> tuple[StateStore, Any]:
    """Return a catalog on the store `where` names, and what to close."""
    if where[0] == "sqlite":
        from quantivista.storage.lake.catalog import SqliteCatalog

        catalog = SqliteCatalog(Path(where[1]))
        return catalog, catalog
    from quantivista.storage.postgres.bars import PostgresStore
    from quantivista.storage.postgres.catalog import PgCatalog

    store = PostgresStore(where[1], where[2], pool_size=1)
    return PgCatalog(store.pool), store


def _register(where: tuple[str, ...], me: int, start: Any) -> None:
    """One process: its own subject's versions and versions of a subject all share."""
    catalog, closing = _open(where)
    try:
        registry = SchemaRegistry(catalog)
        start.wait(timeout=60)
        for r in range(ROUNDS):
            mine = _with_field(f"p{me}_r{r}")
            assert registry.register(f"P{me}-avro", mine, "AVRO").schema_id == schema_id_of(mine)
            registry.register("Shared-avro", BASE, "AVRO")
            shared = registry.register("Shared-avro", mine, "AVRO")
            assert shared.schema_id == schema_id_of(mine)
    finally:
        closing.close()


def _run_together(where: tuple[str, ...]) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_register, args=(where, i, start)) for i in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES


def _assert_all_kept(registry: SchemaRegistry) -> None:
    assert registry.subjects() == sorted(["Shared-avro", *(f"P{i}-avro" for i in range(PROCESSES))])
    expected: dict[str, list[dict[str, Any]]] = {
        f"P{i}-avro": [_with_field(f"p{i}_r{r}") for r in range(ROUNDS)] for i in range(PROCESSES)
    }
    expected["Shared-avro"] = [
        BASE,
        *(_with_field(f"p{i}_r{r}") for i in range(PROCESSES) for r in range(ROUNDS)),
    ]
    for subject, schemas in expected.items():
        versions = registry.versions(subject)
        assert [v.version for v in versions] == list(range(1, len(schemas) + 1)), subject
        ids = [v.schema_id for v in versions]
        assert len(set(ids)) == len(ids)
        assert set(ids) == {schema_id_of(s) for s in schemas}, subject
        for entry in versions:
            assert registry.by_id(entry.schema_id).schema == entry.schema


def test_processes_registering_at_once_on_sqlite_keep_every_version(tmp_path: Path) -> None:
    from quantivista.storage.lake.catalog import SqliteCatalog

    path = tmp_path / "catalog.sqlite"
    SqliteCatalog(path).close()  # created once, as the platform does before workers start
    _run_together(("sqlite", str(path)))
    catalog = SqliteCatalog(path)
    _assert_all_kept(SchemaRegistry(catalog))
    catalog.close()


@pytest.fixture
def pg_where(postgres_dsn: str) -> Iterator[tuple[str, ...]]:
    from quantivista.storage.postgres.bars import PostgresStore

    schema = f"qv_test_registry_{uuid4().hex[:10]}"
    PostgresStore(postgres_dsn, schema, pool_size=1).close()  # migrated once
    yield ("postgres", postgres_dsn, schema)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
def test_processes_registering_at_once_on_postgres_keep_every_version(
    pg_where: tuple[str, ...],
) -> None:
    _run_together(pg_where)
    catalog, closing = _open(pg_where)
    _assert_all_kept(SchemaRegistry(catalog))
    closing.close()


def test_a_version_another_instance_claimed_first_is_checked_and_the_next_is_taken() -> None:
    state = MemoryState()
    stale = SchemaRegistry(state)
    fresh = SchemaRegistry(state)
    stale.register("Shared-avro", BASE, "AVRO")
    assert fresh.register("Shared-avro", _with_field("x"), "AVRO").version == 2
    # `stale` has not seen version 2: it must not overwrite it, nor skip checking against it
    entry = stale.register("Shared-avro", _with_field("y"), "AVRO")
    assert (entry.version, [v.version for v in stale.versions("Shared-avro")]) == (3, [1, 2, 3])
    assert fresh.by_id(entry.schema_id) == entry
    narrowed = {**BASE, "fields": [{"name": "a", "type": "int"}]}
    with pytest.raises(SchemaCompatibilityError, match="type changed from long to int"):
        SchemaRegistry(state).register("Shared-avro", narrowed, "AVRO")


def test_the_one_entry_table_of_earlier_releases_is_read() -> None:
    state = MemoryState()
    old = RegisteredSchema("Old-avro", 1, schema_id_of(BASE), "AVRO", BASE)
    state.data["schema_registry"] = {
        "subjects": {
            "Old-avro": [{"version": 1, "id": old.schema_id, "format": "AVRO", "schema": BASE}]
        }
    }
    registry = SchemaRegistry(state)
    assert registry.by_id(old.schema_id) == old
    assert registry.register("Old-avro", _with_field("z"), "AVRO").version == 2
    assert SchemaRegistry(state).versions("Old-avro")[-1].version == 2
