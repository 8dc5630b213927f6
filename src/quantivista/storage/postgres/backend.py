"""The PostgreSQL backend: every kind of state in one schema, nothing in local files.

All stores share the bar store's connection pool; `Backend.close` closes it once (the
catalog does not own it). A second host opening the same DSN and schema sees the same
platform: bars, actions, quarantine, scores, bronze, instruments, the job catalog and the
API clients and tenants (kept by the catalog, as in the lake).
"""

from __future__ import annotations

from quantivista.config import Settings
from quantivista.storage.contracts import Backend
from quantivista.storage.postgres.actions import PgActionStore
from quantivista.storage.postgres.bars import PostgresStore
from quantivista.storage.postgres.catalog import PgCatalog
from quantivista.storage.postgres.instruments import PgInstrumentStore
from quantivista.storage.postgres.quarantine import PgQuarantineStore
from quantivista.storage.postgres.raw import PgRawStore
from quantivista.storage.postgres.scores import PgScoreStore
from quantivista.storage.postgres.workflow_catalog import PgWorkflowCatalog

__all__ = ["open_postgres"]


def open_postgres(settings: Settings) -> Backend:
    """Open the PostgreSQL schema of `settings` (migrated on open); touch no local file."""
    storage = settings.storage
    bars = PostgresStore(
        settings.services.postgres_dsn.get_secret_value(),
        storage.postgres_schema,
        pool_size=storage.postgres_pool_size,
    )
    pool = bars.pool
    catalog = PgCatalog(pool)
    return Backend(
        kind="postgres",
        bars=bars,
        actions=PgActionStore(pool),
        quarantine=PgQuarantineStore(pool),
        scores=PgScoreStore(pool),
        raw=PgRawStore(pool),
        instruments=PgInstrumentStore(pool),
        catalog=catalog,
        clients=catalog,
        workflows=PgWorkflowCatalog(pool),
    )
