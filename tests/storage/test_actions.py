"""The corporate-action store: keyed upserts, idempotency, lookups by symbol."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from quantivista.model.schema import ACTION_POLARS_SCHEMA, coerce_actions
from quantivista.storage.lake.actions import ParquetActionStore


@pytest.fixture
def store(tmp_path: Path) -> ParquetActionStore:
    return ParquetActionStore(tmp_path)


def actions(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return coerce_actions(pl.DataFrame(rows))


SPLIT = {"symbol": "AAA", "action_type": "split", "ex_date": date(2024, 6, 10), "ratio": 4.0,
         "provider": "v1"}  # fmt: skip
DIVIDEND = {"symbol": "AAA", "action_type": "dividend", "ex_date": date(2024, 3, 1),
            "amount": 0.25, "currency": "USD", "provider": "v1"}  # fmt: skip
RENAME = {"symbol": "OLD", "action_type": "symbol_change", "ex_date": date(2024, 1, 5),
          "new_symbol": "NEW", "provider": None}  # fmt: skip


def test_empty_store(store: ParquetActionStore) -> None:
    df = store.all()
    assert df.is_empty()
    assert df.schema == ACTION_POLARS_SCHEMA
    assert store.for_symbols(None).is_empty()


def test_upsert_new_actions_returns_them_and_stores_them(store: ParquetActionStore) -> None:
    fresh = store.upsert(actions([SPLIT, DIVIDEND, RENAME]))
    assert fresh.height == 3
    stored = store.all()
    assert stored.schema == ACTION_POLARS_SCHEMA
    # kept sorted by symbol, ex-date, type
    assert stored.select("symbol", "ex_date").rows() == [
        ("AAA", date(2024, 3, 1)), ("AAA", date(2024, 6, 10)), ("OLD", date(2024, 1, 5)),
    ]  # fmt: skip
    assert store.path.is_file()


def test_upserting_the_same_actions_again_is_a_no_op(store: ParquetActionStore) -> None:
    batch = actions([SPLIT, DIVIDEND, RENAME])
    store.upsert(batch)
    before = (store.path.stat().st_mtime_ns, store.path.read_bytes())
    fresh = store.upsert(batch)
    assert fresh.is_empty()
    assert (store.path.stat().st_mtime_ns, store.path.read_bytes()) == before


def test_changed_action_replaces_the_old_one(store: ParquetActionStore) -> None:
    store.upsert(actions([SPLIT, DIVIDEND]))
    corrected = {**DIVIDEND, "amount": 0.26}
    fresh = store.upsert(actions([corrected, SPLIT]))
    assert fresh.height == 1
    assert fresh["amount"].to_list() == [0.26]
    stored = store.all()
    assert stored.height == 2
    assert stored.filter(pl.col("action_type") == "dividend")["amount"].to_list() == [0.26]


def test_same_event_from_another_provider_is_kept_separately(store: ParquetActionStore) -> None:
    store.upsert(actions([SPLIT]))
    fresh = store.upsert(actions([{**SPLIT, "provider": "v2"}]))
    assert fresh.height == 1
    assert sorted(store.all()["provider"].to_list()) == ["v1", "v2"]


def test_null_provider_is_a_key_like_any_other(store: ParquetActionStore) -> None:
    store.upsert(actions([RENAME]))
    assert store.upsert(actions([RENAME])).is_empty()
    renamed = {**RENAME, "new_symbol": "NEWER"}
    assert store.upsert(actions([renamed])).height == 1
    assert store.all()["new_symbol"].to_list() == ["NEWER"]


def test_within_a_batch_the_last_row_of_a_key_wins(store: ParquetActionStore) -> None:
    store.upsert(actions([DIVIDEND, {**DIVIDEND, "amount": 0.3}]))
    assert store.all()["amount"].to_list() == [0.3]


def test_empty_upsert_writes_nothing(store: ParquetActionStore) -> None:
    assert store.upsert(pl.DataFrame(schema=ACTION_POLARS_SCHEMA)).is_empty()
    assert not store.path.exists()


def test_for_symbols_matches_old_and_new_symbols_by_ex_date(store: ParquetActionStore) -> None:
    other = {"symbol": "BBB", "action_type": "split", "ex_date": date(2024, 2, 1), "ratio": 2.0}
    store.upsert(actions([SPLIT, DIVIDEND, RENAME, other]))
    assert store.for_symbols(["AAA"])["ex_date"].to_list() == [date(2024, 3, 1), date(2024, 6, 10)]
    assert store.for_symbols(["NEW"])["symbol"].to_list() == ["OLD"]
    assert store.for_symbols(["OLD"])["new_symbol"].to_list() == ["NEW"]
    everything = store.for_symbols(None)
    assert everything["ex_date"].to_list() == sorted(everything["ex_date"].to_list())
    assert everything.height == 4
    assert store.for_symbols(["ZZZ"]).is_empty()
