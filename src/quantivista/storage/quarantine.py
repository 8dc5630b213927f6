"""Quarantine: rejected rows kept with their rule and reason, never dropped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.schema import QUARANTINE_POLARS_SCHEMA
from quantivista.storage.lake import atomic_write_parquet

__all__ = ["QuarantineStore"]


class QuarantineStore:
    """Rejected bars as Parquet files, one per rejecting batch: `quarantine/bars/job_id=<id>/`."""

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.dir = Path(root) / "quarantine" / "bars"
        self.settings = settings or StorageSettings()
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, rejected: pl.DataFrame, *, job_id: str, at: datetime) -> int:
        """Store rejected rows (canonical columns plus rule, severity, reason)."""
        if rejected.is_empty():
            return 0
        frame = (
            rejected.with_columns(
                job_id=pl.col("job_id").fill_null(job_id),
                quarantined_at=pl.lit(at, QUARANTINE_POLARS_SCHEMA["quarantined_at"]),
            )
            .select(QUARANTINE_POLARS_SCHEMA.names())
            .cast(QUARANTINE_POLARS_SCHEMA)
        )
        path = self.dir / f"job_id={job_id}" / f"{uuid4().hex}.parquet"
        atomic_write_parquet(frame, path, self.settings)
        return frame.height

    def list(self, symbols: Sequence[str] | None = None, job_id: str | None = None) -> pl.DataFrame:
        """Return quarantined rows, optionally of some symbols or one job, oldest first."""
        pattern = f"job_id={job_id}/*.parquet" if job_id else "job_id=*/*.parquet"
        files = sorted(self.dir.glob(pattern))
        if not files:
            return pl.DataFrame(schema=QUARANTINE_POLARS_SCHEMA)
        lf = pl.scan_parquet(files, hive_partitioning=False)
        if symbols:
            lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
        return lf.sort("quarantined_at", "symbol", "ts").collect()

    def count(self) -> int:
        """Return how many rows are in quarantine."""
        files = list(self.dir.glob("job_id=*/*.parquet"))
        if not files:
            return 0
        return int(
            pl.scan_parquet(files, hive_partitioning=False).select(pl.len()).collect().item()
        )
