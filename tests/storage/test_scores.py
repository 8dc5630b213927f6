"""Quality scores: big batches are stored as runs of days and read back row for row."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantivista.storage.lake import scores as lake_scores
from quantivista.storage.lake.scores import ParquetScoreStore
from samples import AT, scores, stored_scores


@pytest.fixture
def small_big(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lake_scores, "_BIG", 10)  # the runs layout for any batch of 10+ rows


@pytest.mark.usefixtures("small_big")
def test_a_clean_batch_is_one_run_per_series(tmp_path: Path) -> None:
    store = ParquetScoreStore(tmp_path)
    batch = scores("job-1", ["CCC", "AAA", "BBB"], 40)
    assert store.add(batch, AT) == 120
    files = list((tmp_path / "quality" / "scores").rglob("*.parquet"))
    assert len(files) == 1 and files[0].name.endswith(".runs.parquet")
    assert pl.read_parquet(files[0]).height == 3
    assert store.read().equals(stored_scores(batch))


@pytest.mark.usefixtures("small_big")
@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 89)), st.permutations(["AAA", "BBB", "CCC"]))
def test_runs_read_back_row_for_row(bad: set[int], symbols: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ParquetScoreStore(Path(tmp))
        batch = scores("job-1", symbols, 30, bad)
        store.add(batch, AT)
        assert store.read().equals(stored_scores(batch))
        assert store.read(["BBB"]).equals(stored_scores(batch.filter(pl.col("symbol") == "BBB")))
        assert store.read(job_id="job-1", timeframe="1h").is_empty()


def test_runs_and_row_files_are_read_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ParquetScoreStore(tmp_path)
    first = scores("job-1", ["AAA", "BBB"], 5, {2})
    store.add(first, AT)  # small: one row per day
    monkeypatch.setattr(lake_scores, "_BIG", 10)
    later = scores("job-2", ["AAA", "BBB"], 5).with_columns(
        timeframe=pl.when(pl.col("symbol") == "BBB").then(pl.lit("1h")).otherwise("timeframe"),
        rows=pl.when(pl.col("symbol") == "BBB").then(7).otherwise("rows").cast(pl.UInt32),
    )
    store.add(later, AT + timedelta(hours=1))
    names = sorted(p.name.endswith(".runs.parquet") for p in tmp_path.rglob("*.parquet"))
    assert names == [False, True]
    both = store.read()
    assert both.height == 20
    assert both.filter(pl.col("job_id") == "job-2")["rows"].to_list() == [1] * 5 + [7] * 5
    daily = store.daily(timeframe="1d")
    assert daily.height == 10  # AAA's re-scored days come from the later job
    assert daily.filter(pl.col("symbol") == "AAA")["job_id"].unique().to_list() == ["job-2"]


@pytest.mark.parametrize("fsync", [True, False])
def test_score_files_are_fsynced_as_the_lake_files_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    from quantivista.config import StorageSettings

    synced: list[Path] = []
    monkeypatch.setattr(lake_scores, "fsync_path", synced.append)
    store = ParquetScoreStore(tmp_path, StorageSettings(fsync=fsync))
    batch = scores("job-1", ["AAA", "BBB"], 5)
    store.add(batch, AT)  # a row file
    monkeypatch.setattr(lake_scores, "_BIG", 10)
    store.add(scores("job-2", ["AAA", "BBB"], 5), AT)  # a runs file
    assert len(synced) == (4 if fsync else 0)  # each file and its folder
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert store.read(job_id="job-1").equals(stored_scores(batch))
