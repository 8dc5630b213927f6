"""Pick the bar store named by the settings."""

from __future__ import annotations

from quantivista.config import Settings
from quantivista.storage.base import BarStore
from quantivista.storage.lake import ParquetLake

__all__ = ["open_store"]


def open_store(settings: Settings) -> BarStore:
    """Return the configured `BarStore`: the embedded lake, or PostgreSQL (migrated on open)."""
    storage = settings.storage
    if storage.backend == "postgres":
        from quantivista.storage.postgres import PostgresStore  # needs the `postgres` extra

        return PostgresStore(
            settings.services.postgres_dsn.get_secret_value(),
            storage.postgres_schema,
            pool_size=storage.postgres_pool_size,
        )
    return ParquetLake(settings.data_dir, storage)
