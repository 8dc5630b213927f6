"""Quality scores: big batches are stored as runs of days and read back row for row."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.storage.lake import scores as lake_scores
from quantivista.storage.lake.scores import ParquetScoreStore, latest_scores
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


def _all_sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


def _batches(n: int) -> list[pl.DataFrame]:
    """`n` micro-batches, each its own job (a stream's), some symbols flagged."""
    return [scores(f"job-{k:03d}", ["AAA", "BBB", "CCC"], 2, {k % 6}) for k in range(n)]


def _streamed(
    root: Path, n: int, *, compact_each: bool = False
) -> tuple[ParquetScoreStore, list[pl.DataFrame]]:
    """A store under `root` given `_batches(n)` a second apart, as a stream validates them
    (compacted after each when `compact_each`); return it and the batches."""
    store = ParquetScoreStore(root)
    batches = _batches(n)
    for k, batch in enumerate(batches):
        store.add(batch, AT + timedelta(seconds=k))
        if compact_each:
            store.compact()
    return store, batches


def _as_stored(batches: list[pl.DataFrame]) -> pl.DataFrame:
    """The rows of `batches` as the store reads them back after `_streamed`."""
    return pl.concat([stored_scores(b, AT + timedelta(seconds=k)) for k, b in enumerate(batches)])


def test_compaction_folds_small_files_and_reads_stay_exact(tmp_path: Path) -> None:
    store, batches = _streamed(tmp_path, 20)
    big = scores("job-big", ["AAA"], 12)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lake_scores, "_BIG", 10)
        store.add(big, AT + timedelta(minutes=5))  # a runs file: kept as it is
    before = store.read()
    assert store.compact() == 20
    files = sorted(p.relative_to(tmp_path / "quality" / "scores").as_posix()
                   for p in (tmp_path / "quality" / "scores").rglob("*.parquet"))  # fmt: skip
    assert len(files) == 2 and files[0].startswith("_compacted/part-01-")
    assert files[1].startswith("job_id=job-big/") and files[1].endswith(".runs.parquet")
    assert len(list((tmp_path / "quality" / "scores").iterdir())) == 2  # job folders gone
    after = store.read()
    assert after.height == before.height == 20 * 6 + 12
    assert_frame_equal(_all_sorted(after), _all_sorted(before))
    one = store.read(job_id="job-007")
    assert_frame_equal(one, stored_scores(batches[7], AT + timedelta(seconds=7)))
    assert store.read(job_id="job-big").height == 12
    assert_frame_equal(store.read(["BBB"]), before.filter(pl.col("symbol") == "BBB"))
    assert_frame_equal(store.daily(), latest_scores(before))
    assert store.compact() == 0  # nothing small left
    # the compacted file holds its rows sorted by key, in the stored types
    compacted = pl.read_parquet(tmp_path / "quality" / "scores" / files[0])
    assert compacted.schema == before.schema
    assert_frame_equal(compacted, compacted.sort("symbol", "timeframe", "date", "job_id",
                                                 "scored_at"))  # fmt: skip
    assert compacted.height == 20 * 6


def test_compacted_files_fold_into_the_next_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake_scores, "_FANOUT", 3)
    # one tier-1 file per batch; three of them make a tier-2 file
    store, batches = _streamed(tmp_path, 10, compact_each=True)
    names = sorted(p.name[:7] for p in (tmp_path / "quality" / "scores").rglob("*.parquet"))
    assert names == ["part-01", "part-03"]  # 9 batches: 3 x 3 tier-1, 3 tier-2, 1 tier-3
    want = _as_stored(batches)
    assert_frame_equal(_all_sorted(store.read()), _all_sorted(want))


def test_a_compaction_that_dies_before_removing_its_files_counts_each_row_once(
    tmp_path: Path,
) -> None:
    store, _ = _streamed(tmp_path, 5)
    root = tmp_path / "quality" / "scores"
    want = store.read()
    kept = {p: p.read_bytes() for p in root.rglob("*.parquet")}
    store.compact()
    for path, data in kept.items():  # as if the compaction died before removing them
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for reader in (store, ParquetScoreStore(tmp_path)):
        assert_frame_equal(_all_sorted(reader.read()), _all_sorted(want))
        assert reader.read(job_id="job-002").height == 6
    assert store.compact() == 5  # the leftovers are removed, not compacted again
    assert len(list(root.rglob("*.parquet"))) == 1
    assert_frame_equal(_all_sorted(store.read()), _all_sorted(want))


def test_a_stream_of_small_batches_is_compacted_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake_scores, "_COMPACT_FILES", 4)
    store, batches = _streamed(tmp_path, 30)
    store.close()  # waits for the compaction under way
    files = list((tmp_path / "quality" / "scores").rglob("*.parquet"))
    assert len(files) < 30 // 2
    want = _as_stored(batches)
    assert_frame_equal(_all_sorted(ParquetScoreStore(tmp_path).read()), _all_sorted(want))
