"""Open the backend named by the settings."""

from __future__ import annotations

from quantivista.config import Settings
from quantivista.storage.contracts import Backend

__all__ = ["open_backend", "store_exists"]


def open_backend(settings: Settings, *, create: bool = True) -> Backend:
    """Open the stores named by `settings.storage.backend` (PostgreSQL is migrated on open).

    With `create=False` an embedded store must exist already (`NotFoundError` otherwise):
    a reading command must not turn a mistyped directory into an empty store.
    """
    if settings.storage.backend == "postgres":
        from quantivista.storage.postgres.backend import open_postgres  # the `postgres` extra

        return open_postgres(settings)
    from quantivista.storage.lake.backend import open_lake

    return open_lake(settings, create=create)


def store_exists(settings: Settings) -> bool:
    """Say whether the configured store exists (PostgreSQL schemas are made on open)."""
    if settings.storage.backend == "postgres":
        return True
    from quantivista.storage.lake.layout import LakeLayout

    return LakeLayout(settings.data_dir).is_store()
