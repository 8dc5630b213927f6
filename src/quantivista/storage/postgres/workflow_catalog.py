"""The reporting-side ingestion catalog in PostgreSQL (tables of migration 0003).

Each transaction sets `qv.tenant` to the caller's tenant (`set_config(..., true)`: for
this transaction only); the tables' row-level policies then show and accept that tenant's
rows alone. Listing every tenant's sources (the scheduler) sets `qv.all_tenants` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg_pool import ConnectionPool

from quantivista.storage.postgres.db import maps_storage_errors, storage_errors
from quantivista.storage.workflows import Cursor, SqlWorkflowCatalog

__all__ = ["PgWorkflowCatalog"]


@maps_storage_errors
class PgWorkflowCatalog(SqlWorkflowCatalog):
    """The `WorkflowCatalog` on the backend's pool (which its owner closes)."""

    placeholder = "%s"

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    @contextmanager
    def _tx(self, tenant: str | None) -> Iterator[Cursor]:
        with (
            storage_errors("ingestion catalog operation"),
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            if tenant is None:
                cur.execute("SELECT set_config('qv.all_tenants', 'on', true)")
            else:
                cur.execute("SELECT set_config('qv.tenant', %s, true)", (tenant,))
            yield cur
