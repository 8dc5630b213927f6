"""The embedded backend: every store under the data directory."""

from __future__ import annotations

from quantivista.config import Settings
from quantivista.errors import NotFoundError
from quantivista.storage.contracts import Backend
from quantivista.storage.lake.actions import ParquetActionStore
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.lake.bronze import FileRawStore
from quantivista.storage.lake.catalog import SqliteCatalog
from quantivista.storage.lake.instruments import ParquetInstrumentStore
from quantivista.storage.lake.layout import LakeLayout
from quantivista.storage.lake.quarantine import ParquetQuarantineStore
from quantivista.storage.lake.scores import ParquetScoreStore
from quantivista.storage.lake.workflow_catalog import SqliteWorkflowCatalog

__all__ = ["COLD_TIER_KEY", "open_lake"]

COLD_TIER_KEY = "cold_tier"  # catalog state: where `qv retention` archived bars to


def open_lake(settings: Settings, *, create: bool = True) -> Backend:
    """Open the lake at `settings.data_dir`; create it when `create` (else `NotFoundError`)."""
    root, storage = settings.data_dir, settings.storage
    if not create and not LakeLayout(root).is_store():
        raise NotFoundError(
            f"{root} holds no QuantiVista store (give -d DIR / QV_DATA_DIR, or create one"
            " with qv ingest or qv demo)",
        )
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
    catalog = SqliteCatalog(LakeLayout(root).catalog)
    if storage.archive_url is None:  # archived bars stay visible without the setting
        remembered = catalog.get_state(COLD_TIER_KEY)
        if remembered is not None:
            storage = storage.model_copy(update={"archive_url": remembered["url"]})
    return Backend(
        kind="lake",
        bars=ParquetLake(root, storage),
        actions=ParquetActionStore(root, storage),
        quarantine=ParquetQuarantineStore(root, storage),
        scores=ParquetScoreStore(root, storage),
        raw=FileRawStore(root, storage),
        instruments=ParquetInstrumentStore(root, storage),
        catalog=catalog,
        clients=catalog,
        workflows=SqliteWorkflowCatalog(LakeLayout(root).workflows),
    )
