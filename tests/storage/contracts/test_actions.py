"""The action store contract on every backend: keyed upserts, idempotency, lookups, versions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from quantivista.model.schema import ACTION_COLUMNS, ACTION_POLARS_SCHEMA, coerce_actions
from quantivista.storage.contracts import Backend

from .conftest import Site, run_together

SPLIT = {"symbol": "AAA", "action_type": "split", "ex_date": date(2024, 6, 10), "ratio": 4.0,
         "provider": "v1"}  # fmt: skip
DIVIDEND = {"symbol": "AAA", "action_type": "dividend", "ex_date": date(2024, 3, 1),
            "amount": 0.25, "currency": "USD", "provider": "v1"}  # fmt: skip
RENAME = {"symbol": "OLD", "action_type": "symbol_change", "ex_date": date(2024, 1, 5),
          "new_symbol": "NEW", "provider": None}  # fmt: skip


def actions(rows: list[dict[str, Any]]) -> pl.DataFrame:
    full = [{c: r.get(c) for c in ACTION_COLUMNS} for r in rows]
    return coerce_actions(pl.DataFrame(full, schema=ACTION_POLARS_SCHEMA))


def test_empty_store(backend: Backend) -> None:
    df = backend.actions.all()
    assert df.is_empty()
    assert df.schema == ACTION_POLARS_SCHEMA
    assert backend.actions.for_symbols(None).is_empty()
    assert backend.actions.for_symbols(["AAA"]).schema == ACTION_POLARS_SCHEMA


def test_upsert_new_actions_returns_them_and_stores_them_sorted(backend: Backend) -> None:
    fresh = backend.actions.upsert(actions([SPLIT, DIVIDEND, RENAME]))
    assert fresh.height == 3
    stored = backend.actions.all()
    assert stored.schema == ACTION_POLARS_SCHEMA
    assert stored.select("symbol", "ex_date").rows() == [
        ("AAA", date(2024, 3, 1)), ("AAA", date(2024, 6, 10)), ("OLD", date(2024, 1, 5)),
    ]  # fmt: skip
    assert_frame_equal(stored, actions([DIVIDEND, SPLIT, RENAME]))


def test_upserting_the_same_actions_again_changes_nothing(backend: Backend) -> None:
    batch = actions([SPLIT, DIVIDEND, RENAME])
    backend.actions.upsert(batch)
    before = (backend.actions.all(), backend.actions.version())
    fresh = backend.actions.upsert(batch)
    assert fresh.is_empty()
    assert_frame_equal(backend.actions.all(), before[0])
    assert backend.actions.version() == before[1]


def test_changed_action_replaces_the_old_one(backend: Backend) -> None:
    backend.actions.upsert(actions([SPLIT, DIVIDEND]))
    corrected = {**DIVIDEND, "amount": 0.26}
    fresh = backend.actions.upsert(actions([corrected, SPLIT]))
    assert fresh.height == 1
    assert fresh["amount"].to_list() == [0.26]
    stored = backend.actions.all()
    assert stored.height == 2
    assert stored.filter(pl.col("action_type") == "dividend")["amount"].to_list() == [0.26]


def test_same_event_from_another_provider_is_kept_separately(backend: Backend) -> None:
    backend.actions.upsert(actions([SPLIT]))
    fresh = backend.actions.upsert(actions([{**SPLIT, "provider": "v2"}]))
    assert fresh.height == 1
    assert backend.actions.all()["provider"].to_list() == ["v1", "v2"]


def test_null_provider_is_a_key_like_any_other(backend: Backend) -> None:
    backend.actions.upsert(actions([RENAME]))
    assert backend.actions.upsert(actions([RENAME])).is_empty()
    renamed = {**RENAME, "new_symbol": "NEWER"}
    assert backend.actions.upsert(actions([renamed])).height == 1
    assert backend.actions.all()["new_symbol"].to_list() == ["NEWER"]
    backend.actions.upsert(actions([{**RENAME, "provider": "v1"}]))
    assert backend.actions.all()["provider"].to_list() == [None, "v1"]  # NULL sorts first


def test_within_a_batch_the_last_row_of_a_key_wins(backend: Backend) -> None:
    fresh = backend.actions.upsert(actions([DIVIDEND, {**DIVIDEND, "amount": 0.3}]))
    assert fresh["amount"].to_list() == [0.3]
    assert backend.actions.all()["amount"].to_list() == [0.3]


def test_empty_upsert_writes_nothing(backend: Backend) -> None:
    version = backend.actions.version()
    assert backend.actions.upsert(pl.DataFrame(schema=ACTION_POLARS_SCHEMA)).is_empty()
    assert backend.actions.all().is_empty()
    assert backend.actions.version() == version


def test_for_symbols_matches_old_and_new_symbols_by_ex_date(backend: Backend) -> None:
    other = {"symbol": "BBB", "action_type": "split", "ex_date": date(2024, 2, 1), "ratio": 2.0}
    backend.actions.upsert(actions([SPLIT, DIVIDEND, RENAME, other]))
    store = backend.actions
    assert store.for_symbols(["AAA"])["ex_date"].to_list() == [date(2024, 3, 1), date(2024, 6, 10)]
    assert store.for_symbols(["NEW"])["symbol"].to_list() == ["OLD"]
    assert store.for_symbols(["OLD"])["new_symbol"].to_list() == ["NEW"]
    everything = store.for_symbols(None)
    assert everything["ex_date"].to_list() == sorted(everything["ex_date"].to_list())
    assert everything.height == 4
    assert store.for_symbols(["ZZZ"]).is_empty()
    assert_frame_equal(store.for_symbols([]), everything)


def test_version_changes_after_a_write_through_another_instance(site: Site) -> None:
    reader, writer = site.open(), site.open()
    first = reader.actions.version()
    writer.actions.upsert(actions([SPLIT]))
    second = reader.actions.version()
    assert second != first
    assert reader.actions.all().height == 1  # and the reader sees the write
    writer.actions.upsert(actions([{**SPLIT, "ratio": 5.0}]))
    assert reader.actions.version() not in (first, second)


def test_concurrent_writers_in_threads_lose_nothing(backend: Backend) -> None:
    def write(worker: int) -> None:
        for i in range(5):
            day = date(2020, 1, 1) + timedelta(days=i)
            row = {**DIVIDEND, "ex_date": day, "provider": f"w{worker}"}
            backend.actions.upsert(actions([row]))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    stored = backend.actions.all()
    assert stored.height == 20
    assert stored.group_by("provider").len().sort("provider")["len"].to_list() == [5] * 4


def test_concurrent_writers_in_two_processes_lose_nothing(site: Site) -> None:
    done = run_together(
        site.worker("upsert_actions", tag="p1", count=25),
        site.worker("upsert_actions", tag="p2", count=25),
    )
    assert done == [25, 25]
    stored = site.open().actions.all()
    assert stored.height == 50
    assert sorted(stored["provider"].unique().to_list()) == ["p1", "p2"]


# -- a model: a dict from key to row ---------------------------------------------------------
_ROWS = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(["AAA", "BBB"]),
        "action_type": st.sampled_from(["split", "dividend"]),
        "ex_date": st.sampled_from([date(2024, 1, 2), date(2024, 1, 3), date(2024, 2, 1)]),
        "provider": st.sampled_from([None, "v1"]),
        "ratio": st.sampled_from([None, 2.0, 0.5]),
        "amount": st.sampled_from([None, 0.25]),
        "currency": st.sampled_from([None, "USD"]),
        "new_symbol": st.sampled_from([None, "ZZZ"]),
    }
)
_BATCHES = st.lists(st.lists(_ROWS, max_size=5), min_size=1, max_size=5)
_KEY = ("symbol", "action_type", "ex_date", "provider")


def _sorted_rows(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return actions(rows).sort(
        "symbol", "ex_date", "action_type", "provider", nulls_last=False, maintain_order=True
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_BATCHES)
def test_random_upserts_agree_with_a_dict_model(
    site: Site, batches: list[list[dict[str, Any]]]
) -> None:
    store = site.fresh("actions").actions
    model: dict[tuple[Any, ...], dict[str, Any]] = {}
    for batch in batches:
        latest = {tuple(r[k] for k in _KEY): r for r in batch}  # the last of a key wins
        changed = [r for key, r in latest.items() if model.get(key) != r]
        fresh = store.upsert(actions(batch))
        assert_frame_equal(_sorted_rows(fresh.to_dicts()), _sorted_rows(changed))
        model.update(latest)
    assert_frame_equal(store.all(), _sorted_rows(list(model.values())))
    for wanted in (["AAA"], ["ZZZ"], None):
        by_date = store.for_symbols(wanted)
        assert by_date["ex_date"].is_sorted()
        assert by_date.height == sum(
            wanted is None or r["symbol"] in wanted or r["new_symbol"] in wanted
            for r in model.values()
        )


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_BATCHES)
def test_lake_and_postgres_return_the_same_frames(
    lake_site: Site, pg_backend_site: Site, batches: list[list[dict[str, Any]]]
) -> None:
    lake, pg = lake_site.fresh().actions, pg_backend_site.fresh("actions").actions
    for batch in batches:
        assert_frame_equal(pg.upsert(actions(batch)), lake.upsert(actions(batch)))
    assert_frame_equal(pg.all(), lake.all())
    for wanted in (["AAA"], ["ZZZ", "BBB"], None):
        assert_frame_equal(pg.for_symbols(wanted), lake.for_symbols(wanted))
