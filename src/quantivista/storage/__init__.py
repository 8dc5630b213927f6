"""Storage: the store contract, the embedded lake and the PostgreSQL backend.

`PostgresStore` lives in `quantivista.storage.postgres` (needs the `postgres` extra).
"""

from quantivista.storage.actions import ActionStore
from quantivista.storage.archive import ColdTier, archive_expired
from quantivista.storage.base import BarStore, RetentionPolicy, UpsertStats, apply_retention
from quantivista.storage.catalog import Catalog
from quantivista.storage.factory import open_store
from quantivista.storage.lake import ParquetLake, storage_report
from quantivista.storage.quarantine import QuarantineStore
from quantivista.storage.rollup import Rollup, rollup

__all__ = [
    "ActionStore",
    "BarStore",
    "Catalog",
    "ColdTier",
    "ParquetLake",
    "QuarantineStore",
    "RetentionPolicy",
    "Rollup",
    "UpsertStats",
    "apply_retention",
    "archive_expired",
    "open_store",
    "rollup",
    "storage_report",
]
