"""The SQLite catalog: its file, reopening it, and use after close.

The behaviour every backend shares is in `contracts/test_catalog.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quantivista.errors import StorageError
from quantivista.storage.lake.catalog import SqliteCatalog
from samples import T0, job, report


def test_creates_its_directory_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "catalog.sqlite"
    SqliteCatalog(path).close()
    assert path.is_file()


def test_catalog_persists_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    first = SqliteCatalog(path)
    first.save_job(job("job-1"))
    first.save_report(report("job-1"), created_at=T0)
    first.close()
    second = SqliteCatalog(path)
    try:
        assert second.job("job-1").job_id == "job-1"
        assert len(second.reports("job-1")) == 1
    finally:
        second.close()


def test_use_after_close_is_a_storage_error(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "c.sqlite")
    cat.close()
    with pytest.raises(StorageError, match="catalog operation failed") as info:
        cat.jobs()
    assert info.value.context["path"].endswith("c.sqlite")
