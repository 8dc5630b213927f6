"""The score store contract on every backend: batches read back row for row, latest job wins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.model.schema import SCORE_SCHEMA, STORED_SCORE_SCHEMA
from quantivista.storage.contracts import Backend
from samples import AT, scores, stored_scores

from .conftest import Site


def test_empty_store(backend: Backend) -> None:
    assert backend.scores.read().schema == STORED_SCORE_SCHEMA
    assert backend.scores.read().is_empty()
    assert backend.scores.daily().schema == STORED_SCORE_SCHEMA
    assert backend.scores.add(pl.DataFrame(schema=SCORE_SCHEMA), AT) == 0


def test_a_batch_reads_back_row_for_row(backend: Backend) -> None:
    batch = scores("job-1", ["CCC", "AAA", "BBB"], 40, {3, 4, 50, 119})
    assert backend.scores.add(batch, AT) == 120
    assert_frame_equal(backend.scores.read(), stored_scores(batch))
    assert_frame_equal(
        backend.scores.read(["BBB"]), stored_scores(batch.filter(pl.col("symbol") == "BBB"))
    )
    assert_frame_equal(backend.scores.read([]), stored_scores(batch))  # an empty filter: all
    assert backend.scores.read(job_id="job-1", timeframe="1h").is_empty()
    assert backend.scores.read(job_id="job-2").is_empty()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sets(st.integers(0, 89)), st.permutations(["AAA", "BBB", "CCC"]))
def test_any_pattern_of_bad_days_reads_back_row_for_row(
    site: Site, bad: set[int], symbols: list[str]
) -> None:
    store = site.fresh("quality_scores").scores
    batch = scores("job-1", symbols, 30, bad)
    store.add(batch, AT)
    assert_frame_equal(store.read(), stored_scores(batch))
    assert_frame_equal(store.read(["BBB"]), stored_scores(batch.filter(pl.col("symbol") == "BBB")))


def test_the_job_filter_is_the_job_of_the_batch(backend: Backend) -> None:
    backend.scores.add(scores("job-1", ["AAA"], 3), AT)
    backend.scores.add(scores("job-2", ["AAA"], 3), AT + timedelta(hours=1))
    assert backend.scores.read(job_id="job-2")["job_id"].unique().to_list() == ["job-2"]
    assert backend.scores.read().height == 6


def test_daily_keeps_the_latest_jobs_score_per_day(backend: Backend) -> None:
    first = scores("job-1", ["AAA", "BBB"], 5, {2})
    backend.scores.add(first, AT)
    later = scores("job-2", ["AAA", "BBB"], 5).with_columns(
        timeframe=pl.when(pl.col("symbol") == "BBB").then(pl.lit("1h")).otherwise("timeframe"),
        rows=pl.when(pl.col("symbol") == "BBB").then(7).otherwise("rows").cast(pl.UInt32),
    )
    backend.scores.add(later, AT + timedelta(hours=1))
    both = backend.scores.read()
    assert both.height == 20
    assert both.filter(pl.col("job_id") == "job-2")["rows"].to_list() == [1] * 5 + [7] * 5
    daily = backend.scores.daily(timeframe="1d")
    assert daily.height == 10  # AAA's re-scored days come from the later job
    assert daily.filter(pl.col("symbol") == "AAA")["job_id"].unique().to_list() == ["job-2"]
    assert daily.filter(pl.col("symbol") == "BBB")["job_id"].unique().to_list() == ["job-1"]
    assert backend.scores.daily(["BBB"], "1h")["rows"].to_list() == [7] * 5
    assert backend.scores.daily().height == 15


def test_concurrent_adds_from_threads_keep_every_batch(backend: Backend) -> None:
    def add(i: int) -> int:
        return backend.scores.add(scores(f"job-{i}", ["AAA", "BBB"], 10, {i}), AT)

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(add, range(8))) == 160
    assert backend.scores.read().height == 160
    assert backend.scores.daily().height == 20


def test_scores_are_seen_by_another_instance(site: Site) -> None:
    site.open().scores.add(scores("job-1", ["AAA"], 4), AT)
    assert site.open().scores.read().height == 4


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.sets(st.integers(0, 29)), st.sampled_from(["1d", "1h"])),
        min_size=1,
        max_size=3,
    )
)
def test_lake_and_postgres_return_the_same_frames(
    lake_site: Site, pg_backend_site: Site, batches: list[tuple[set[int], str]]
) -> None:
    lake, pg = lake_site.fresh().scores, pg_backend_site.fresh("quality_scores").scores
    for i, (bad, timeframe) in enumerate(batches):
        batch = scores(f"job-{i}", ["AAA", "BBB", "CCC"], 10, bad).with_columns(
            timeframe=pl.lit(timeframe)
        )
        at = AT + timedelta(minutes=i)
        assert pg.add(batch, at) == lake.add(batch, at)
    for symbols, job, timeframe in (
        (None, None, None),
        (["BBB"], "job-0", "1d"),
        (None, None, "1h"),
    ):
        assert_frame_equal(pg.read(symbols, job, timeframe), lake.read(symbols, job, timeframe))
        assert_frame_equal(pg.daily(symbols, timeframe), lake.daily(symbols, timeframe))
