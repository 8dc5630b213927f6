"""A backend: one complete set of stores, built from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quantivista.config import Settings
from quantivista.storage.base import BarStore
from quantivista.storage.contracts import (
    ActionStore,
    InstrumentStore,
    JobCatalog,
    QuarantineStore,
    RawStore,
    ScoreStore,
)

__all__ = ["Backend", "open_backend"]


@dataclass(frozen=True)
class Backend:
    """Every store of one platform; `kind` says where they live."""

    kind: Literal["lake", "postgres"]
    bars: BarStore
    actions: ActionStore
    quarantine: QuarantineStore
    scores: ScoreStore
    raw: RawStore
    instruments: InstrumentStore
    catalog: JobCatalog

    def close(self) -> None:
        """Release connections, threads and file handles."""
        self.catalog.close()
        self.bars.close()


def open_backend(settings: Settings) -> Backend:
    """Open the stores named by `settings.storage.backend` (PostgreSQL is migrated on open)."""
    if settings.storage.backend == "postgres":
        from quantivista.storage.postgres.backend import open_postgres  # the `postgres` extra

        return open_postgres(settings)
    from quantivista.storage.lake.backend import open_lake

    return open_lake(settings)
