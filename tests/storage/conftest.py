"""Storage fixtures: one PostgreSQL schema per test session, and a store per backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import polars as pl
import psycopg
import pytest

from quantivista.config import StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.storage.base import BarStore
from quantivista.storage.lake.bars import ParquetLake
from quantivista.storage.postgres.bars import PostgresStore


def lake_settings(**kw: Any) -> StorageSettings:
    """Return the settings of a small test lake: one writer thread unless `kw` says more."""
    kw.setdefault("write_threads", 1)
    return StorageSettings(**kw)


def ohlcv_bars(
    symbols: Sequence[str], ts: Sequence[datetime], close: np.ndarray, tf: str, **coerce: Any
) -> pl.DataFrame:
    """Return canonical bars of each symbol at each of `ts` (symbol by symbol), `close` a
    row: open = close, high and low 1 away, volume 10 (`coerce` goes to `coerce_bars`)."""
    frame = pl.DataFrame(
        {
            "symbol": np.repeat(list(symbols), len(ts)),
            "ts": list(ts) * len(symbols),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.full(len(close), 10.0),
        }
    )
    return coerce_bars(frame, timeframe=tf, provider="t", **coerce)


@pytest.fixture(scope="session")
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """Return a schema name unique to this test session; drop it (and its kin) afterwards."""
    name = f"qv_test_{uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (name + "%",)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def pg_store_session(postgres_dsn: str, pg_schema: str) -> Iterator[PostgresStore]:
    """Return one migrated PostgreSQL store for the session."""
    store = PostgresStore(postgres_dsn, pg_schema, pool_size=2)
    yield store
    store.close()


@pytest.fixture
def pg_store(pg_store_session: PostgresStore) -> PostgresStore:
    """Return the session's PostgreSQL store, emptied."""
    with pg_store_session.pool.connection() as conn:
        conn.execute("TRUNCATE bars, bars_history")
    return pg_store_session


@pytest.fixture(
    params=["lake", "lake-parquet", "lake-one-bucket", "lake-row-groups", "lake-arrow-uncached",
            "postgres"]
)  # fmt: skip
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BarStore:
    """Return an empty store of each backend in turn.

    "lake" keeps daily bars in Arrow IPC base files (the default), "lake-parquet" in Parquet.
    "lake-one-bucket" puts every symbol into one file per partition: merges, reads, deletes
    and history must then keep symbols apart inside files; "lake-row-groups" (Parquet) also
    cuts those files into one row group a symbol, and reads (no cache) decode only their
    groups; "lake-arrow-uncached" reads slices of Arrow IPC files by their symbol index.
    """
    if request.param == "lake":
        return ParquetLake(tmp_path / "lake", StorageSettings(write_threads=2))
    if request.param == "lake-parquet":
        settings = StorageSettings(write_threads=2, daily_format="parquet")
        return ParquetLake(tmp_path / "lake", settings)
    if request.param == "lake-arrow-uncached":
        settings = StorageSettings(write_threads=2, buckets=1, cache_mb=0)
        return ParquetLake(tmp_path / "lake", settings)
    if request.param == "lake-one-bucket":
        return ParquetLake(tmp_path / "lake", StorageSettings(write_threads=2, buckets=1))
    if request.param == "lake-row-groups":  # one row group a symbol: reads pick groups
        settings = StorageSettings(
            write_threads=2, buckets=1, row_group_rows=1, cache_mb=0, daily_format="parquet"
        )
        return ParquetLake(tmp_path / "lake", settings)
    pg: PostgresStore = request.getfixturevalue("pg_store")
    return pg
