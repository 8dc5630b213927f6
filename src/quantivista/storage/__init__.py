"""Storage: one contract per kind of state (`contracts`), and the backends that keep them all.

    backend = open_backend(settings)      # lake (embedded) or PostgreSQL, from the settings
    backend.bars.read([...], Timeframe.parse("1d"))

`lake/` keeps everything under the data directory (Parquet files and a SQLite catalog);
`postgres/` keeps everything in one PostgreSQL schema (extra `postgres`), so a second host
sees the same platform. Importing this package does not import psycopg.
"""

from __future__ import annotations

from quantivista.storage.backend import open_backend, store_exists
from quantivista.storage.base import (
    BarStore,
    RetentionPolicy,
    UpsertStats,
    apply_retention,
)
from quantivista.storage.contracts import (
    ActionStore,
    Backend,
    InstrumentStore,
    JobCatalog,
    QuarantineStore,
    RawStore,
    ScoreStore,
)

__all__ = [
    "ActionStore",
    "Backend",
    "BarStore",
    "InstrumentStore",
    "JobCatalog",
    "QuarantineStore",
    "RawStore",
    "RetentionPolicy",
    "ScoreStore",
    "UpsertStats",
    "apply_retention",
    "open_backend",
    "store_exists",
]
