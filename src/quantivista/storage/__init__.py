"""Storage: the store contract and the embedded backends."""

from quantivista.storage.actions import ActionStore
from quantivista.storage.base import BarStore, UpsertStats
from quantivista.storage.catalog import Catalog
from quantivista.storage.lake import ParquetLake
from quantivista.storage.quarantine import QuarantineStore

__all__ = ["ActionStore", "BarStore", "Catalog", "ParquetLake", "QuarantineStore", "UpsertStats"]
