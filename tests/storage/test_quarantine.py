"""The lake's quarantine files: one Parquet file per rejecting batch, none for nothing.

The behaviour every backend shares is in `contracts/test_quarantine.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from conftest import MakeBars
from quantivista.model.schema import QUARANTINE_POLARS_SCHEMA
from quantivista.storage.lake.quarantine import ParquetQuarantineStore

AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_adding_nothing_writes_nothing(tmp_path: Path) -> None:
    store = ParquetQuarantineStore(tmp_path)
    empty = pl.DataFrame(schema=QUARANTINE_POLARS_SCHEMA).drop("quarantined_at")
    assert store.add(empty, job_id="job-1", at=AT) == 0
    assert list(store.dir.rglob("*.parquet")) == []


def test_each_batch_is_one_file_under_its_job(tmp_path: Path, make_bars: MakeBars) -> None:
    store = ParquetQuarantineStore(tmp_path)
    rows = make_bars(["AAA"], 2).with_columns(
        rule=pl.lit("r"), severity=pl.lit("error"), reason=pl.lit("x")
    )
    store.add(rows, job_id="job-1", at=AT)
    store.add(rows, job_id="job-1", at=AT, dedupe=False)
    files = sorted(store.dir.rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["job_id=job-1", "job_id=job-1"]
