"""Every PostgreSQL store raises typed storage errors, never psycopg's (real PostgreSQL).

A value the server refuses is `StorageRejectedError` (permanent); a lost connection, a
closed pool or a server that does not answer is `StorageError` (retryable).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from quantivista.errors import StorageError, StorageRejectedError
from quantivista.model.jobs import IngestionJob
from quantivista.storage.postgres import (
    actions,
    bars,
    catalog,
    instruments,
    lease,
    opslog,
    quarantine,
    raw,
    scores,
    workflow_catalog,
)
from quantivista.storage.postgres.bars import PostgresStore
from quantivista.storage.postgres.catalog import PgCatalog
from quantivista.storage.postgres.opslog import PgOpsLog
from quantivista.storage.postgres.workflow_catalog import PgWorkflowCatalog

T0 = datetime(2024, 1, 2, tzinfo=UTC)
STORES = [
    actions.PgActionStore,
    bars.PostgresStore,
    catalog.PgCatalog,
    instruments.PgInstrumentStore,
    lease.AdvisoryLease,
    opslog.PgOpsLog,
    quarantine.PgQuarantineStore,
    raw.PgRawStore,
    scores.PgScoreStore,
    workflow_catalog.PgWorkflowCatalog,
]


@dataclass
class Stores:
    dsn: str
    bars: PostgresStore
    catalog: PgCatalog
    opslog: PgOpsLog
    workflows: PgWorkflowCatalog


@pytest.fixture(scope="module")
def review_schema(postgres_dsn: str) -> Iterator[str]:
    name = f"qv_review_errors_{uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def stores(postgres_dsn: str, review_schema: str) -> Iterator[Stores]:
    """One store of each kind on a one-connection pool (so killing it kills the pool's)."""
    store = PostgresStore(postgres_dsn, review_schema, pool_size=1)
    try:
        yield Stores(
            postgres_dsn, store, PgCatalog(store.pool), PgOpsLog(store.pool),
            PgWorkflowCatalog(store.pool),
        )  # fmt: skip
    finally:
        store.close()


def _kill_pool_connection(s: Stores) -> None:
    """Terminate the pool's one server session under it (as a failover or a restart would)."""
    with s.bars.pool.connection() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(s.dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_every_postgres_store_maps_its_public_methods() -> None:
    for cls in STORES:
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") and name != "__init__":
                continue
            assert getattr(member, "__maps_storage_errors__", False), f"{cls.__name__}.{name}"


@pytest.mark.parametrize(
    "call",
    [
        # a bare pool.connection() before: psycopg.DataError escaped
        lambda s: s.opslog.add_audit(T0, "a\x00b", None, "act", "target", "ok", {}),
        lambda s: s.opslog.audit(limit=-1),  # LIMIT must not be negative (22, data exception)
        lambda s: s.catalog.save_job(IngestionJob(job_id="j\x00", source_id="s", start_time=T0)),
    ],
    ids=["opslog-nul", "opslog-negative-limit", "catalog-nul-key"],
)
def test_pg_store_refused_value_is_permanent_storage_rejected_error(
    stores: Stores, call: Callable[[Stores], Any]
) -> None:
    with pytest.raises(StorageRejectedError) as caught:
        call(stores)
    assert caught.value.retryable is False and not caught.value.is_retryable()
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_workflow_catalog_broken_constraint_is_rejected_not_retryable(stores: Stores) -> None:
    # the catalog used to map every psycopg error to a retryable StorageError (a copy)
    with pytest.raises(StorageRejectedError) as caught, stores.workflows._tx("t1") as cur:
        cur.execute("SELECT 1 / 0")  # division_by_zero: class 22, the data is refused
    assert caught.value.retryable is False
    assert "ingestion catalog operation failed" in str(caught.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.opslog.sla(T0, T0),
        lambda s: s.bars.symbols(),
        lambda s: s.bars.stats(),
        lambda s: s.bars.storage_report(),
        lambda s: s.catalog.jobs(),
        lambda s: s.workflows.sources(None),
    ],
    ids=["opslog-sla", "bars-symbols", "bars-stats", "bars-report", "catalog-jobs", "workflows"],
)
def test_pg_store_lost_connection_is_retryable_storage_error(
    stores: Stores, call: Callable[[Stores], Any]
) -> None:
    _kill_pool_connection(stores)
    with pytest.raises(StorageError) as caught:
        call(stores)
    assert not isinstance(caught.value, StorageRejectedError)
    assert caught.value.retryable is True and caught.value.is_retryable()
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    call(stores)  # the pool dropped the dead connection: trying again works


def test_pg_store_closed_pool_is_retryable_storage_error(stores: Stores) -> None:
    stores.bars.pool.close()
    with pytest.raises(StorageError) as caught:
        stores.opslog.add_sla(T0, "probe", True, 0.1)
    assert caught.value.retryable is True


def test_pg_store_unreachable_server_is_retryable_storage_error(postgres_dsn: str) -> None:
    wrong = psycopg.conninfo.make_conninfo(postgres_dsn, port=1, connect_timeout=1)
    pool: ConnectionPool[Any] = ConnectionPool(wrong, min_size=1, open=False, timeout=0.5)
    pool.open(wait=False)
    try:
        with pytest.raises(StorageError) as caught:
            PgOpsLog(pool)  # creating its tables on open needs a connection
        assert caught.value.retryable is True
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    finally:
        pool.close()
    with pytest.raises(StorageError) as opened:
        PostgresStore(wrong, "qv_review_never")
    assert opened.value.retryable is True


def test_pg_usage_mistake_and_append_only_refusal_are_permanent(stores: Stores) -> None:
    from quantivista.errors import StorageUsageError
    from quantivista.model.timeframe import Timeframe

    with pytest.raises(StorageUsageError) as unknown:
        stores.bars.read(["A"], Timeframe.parse("1d"), columns=["no_such_column"])
    assert not unknown.value.is_retryable()
    stores.opslog.add_audit(T0, "me", None, "act", "target", "ok", {})
    with pytest.raises(StorageRejectedError, match="append-only") as refused:
        stores.opslog.execute("DELETE FROM audit_log")  # the trigger's RAISE EXCEPTION
    assert not refused.value.is_retryable()
