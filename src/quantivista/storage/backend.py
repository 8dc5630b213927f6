"""Open the backend named by the settings."""

from __future__ import annotations

from quantivista.config import Settings
from quantivista.storage.contracts import Backend

__all__ = ["Backend", "open_backend"]


def open_backend(settings: Settings) -> Backend:
    """Open the stores named by `settings.storage.backend` (PostgreSQL is migrated on open)."""
    if settings.storage.backend == "postgres":
        from quantivista.storage.postgres.backend import open_postgres  # the `postgres` extra

        return open_postgres(settings)
    from quantivista.storage.lake.backend import open_lake

    return open_lake(settings)
