"""The PostgreSQL backend: bars in PostgreSQL.

Side stores still live under the data directory until their PostgreSQL tables exist.
"""

from __future__ import annotations

from quantivista.config import Settings
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.actions import ParquetActionStore
from quantivista.storage.lake.bronze import FileRawStore
from quantivista.storage.lake.catalog import SqliteCatalog
from quantivista.storage.lake.instruments import ParquetInstrumentStore
from quantivista.storage.lake.layout import LakeLayout
from quantivista.storage.lake.quarantine import ParquetQuarantineStore
from quantivista.storage.lake.scores import ParquetScoreStore
from quantivista.storage.postgres.bars import PostgresStore

__all__ = ["open_postgres"]


def open_postgres(settings: Settings) -> Backend:
    """Open the PostgreSQL schema of `settings` (migrated on open)."""
    root, storage = settings.data_dir, settings.storage
    root.mkdir(parents=True, exist_ok=True)
    catalog = SqliteCatalog(LakeLayout(root).catalog)
    return Backend(
        kind="postgres",
        bars=PostgresStore(
            settings.services.postgres_dsn.get_secret_value(),
            storage.postgres_schema,
            pool_size=storage.postgres_pool_size,
        ),
        actions=ParquetActionStore(root, storage),
        quarantine=ParquetQuarantineStore(root, storage),
        scores=ParquetScoreStore(root, storage),
        raw=FileRawStore(root, storage),
        instruments=ParquetInstrumentStore(root, storage),
        catalog=catalog,
        clients=catalog,
    )
