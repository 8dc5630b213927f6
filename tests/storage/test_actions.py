"""The lake's action file: one sorted Parquet file, rewritten only when something changed.

The behaviour every backend shares is in `contracts/test_actions.py`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from quantivista.model.schema import ACTION_POLARS_SCHEMA, coerce_actions
from quantivista.storage.lake.actions import ParquetActionStore


@pytest.fixture
def store(tmp_path: Path) -> ParquetActionStore:
    return ParquetActionStore(tmp_path)


SPLIT = {"symbol": "AAA", "action_type": "split", "ex_date": date(2024, 6, 10), "ratio": 4.0,
         "provider": "v1"}  # fmt: skip


def test_upserts_write_one_file(store: ParquetActionStore) -> None:
    store.upsert(coerce_actions(pl.DataFrame([SPLIT])))
    assert store.path.is_file()
    assert pl.read_parquet(store.path).height == 1


def test_upserting_the_same_actions_again_leaves_the_file_alone(store: ParquetActionStore) -> None:
    batch = coerce_actions(pl.DataFrame([SPLIT]))
    store.upsert(batch)
    before = (store.path.stat().st_mtime_ns, store.path.read_bytes())
    assert store.upsert(batch).is_empty()
    assert (store.path.stat().st_mtime_ns, store.path.read_bytes()) == before


def test_empty_upsert_writes_no_file(store: ParquetActionStore) -> None:
    assert store.upsert(pl.DataFrame(schema=ACTION_POLARS_SCHEMA)).is_empty()
    assert not store.path.exists()


def test_actions_asked_again_see_every_write_made_meanwhile(
    store: ParquetActionStore, tmp_path: Path
) -> None:
    assert store.for_symbols(["AAA", "BBB"]).is_empty()
    other = ParquetActionStore(tmp_path)  # another process writes the file
    other.upsert(coerce_actions(pl.DataFrame([SPLIT])))
    assert store.for_symbols(["AAA", "BBB"])["ratio"].to_list() == [4.0]
    assert store.for_symbols(["BBB"]).is_empty()  # other symbols: their own answer
    dividend = {**SPLIT, "symbol": "BBB", "action_type": "dividend", "ratio": None,
                "amount": 0.5, "currency": "USD"}  # fmt: skip
    other.upsert(coerce_actions(pl.DataFrame([dividend])))
    assert store.for_symbols(["AAA", "BBB"])["symbol"].to_list() == ["AAA", "BBB"]
    assert store.for_symbols(["BBB"])["amount"].to_list() == [0.5]
