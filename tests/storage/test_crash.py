"""kill -9 in the middle of a write: the store stays readable, a retry completes the write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from quantivista.config import StorageSettings
from quantivista.model.schema import coerce_bars
from quantivista.model.timeframe import Timeframe
from quantivista.storage.lake.bars import ParquetLake

T1 = datetime(2024, 1, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=1)
D1 = Timeframe.parse("1d")

_CHILD = """
import sys, polars as pl
from quantivista.config import StorageSettings
from quantivista.storage.lake.bars import ParquetLake
lake = ParquetLake(sys.argv[1], StorageSettings(write_threads=1))
batch = pl.read_parquet(sys.argv[2])
print("writing", flush=True)
lake.upsert(batch)
print("done", flush=True)
"""


def _universe(symbols: int, days: int, version: float, at: datetime) -> pl.DataFrame:
    names = np.repeat([f"S{i:03d}" for i in range(symbols)], days)
    start = np.datetime64("2010-01-01", "us")
    ts = np.tile(start + np.arange(days).astype("timedelta64[D]"), symbols)
    price = np.full(symbols * days, 100.0) + version
    frame = pl.DataFrame(
        {
            "symbol": names,
            "ts": pl.Series(ts).dt.replace_time_zone("UTC"),
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price,
            "volume": np.full(symbols * days, 1000.0),
        }
    )
    return coerce_bars(frame, timeframe="1d", provider="t", job_id=f"v{version}", ingested_at=at)


def _kill_mid_write(root: Path, batch_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), str(batch_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"
    # wait until the child is a few partitions into the correction, whatever the load
    deadline = time.monotonic() + 30

    def history_files() -> int:  # Parquet, or Arrow IPC beside Arrow IPC bases
        return sum(p.suffix in (".parquet", ".arrow") for p in (root / "history").rglob("*"))

    while history_files() < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL, "the write finished before the kill"


def test_kill_9_during_a_correction_leaves_the_lake_readable(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    symbols, days = 150, 400
    lake = ParquetLake(root, StorageSettings(write_threads=1))
    v1 = _universe(symbols, days, 0.0, T1)
    lake.upsert(v1)
    v2 = _universe(symbols, days, 5.0, T2)
    batch = tmp_path / "v2.parquet"
    v2.write_parquet(batch)

    _kill_mid_write(root, batch)

    names = [f"S{i:03d}" for i in range(symbols)]
    seen = lake.read(names, D1, columns=["symbol", "ts", "close"])
    assert seen.height == symbols * days  # readable, nothing lost, no duplicates
    # killed mid-write: some partitions hold the correction, the rest the old bars, none torn
    assert sorted(seen["close"].unique()) == [100.0, 105.0]
    assert seen.select(pl.struct("symbol", "ts").is_unique().all()).item()

    stats = lake.upsert(v2)  # the retry completes the write
    assert stats.inserted == 0
    done = lake.read(names, D1)
    assert done.height == symbols * days
    assert done["close"].unique().to_list() == [105.0]
    assert not list(root.rglob(".tmp-*"))  # the retry swept the crashed writer's temporaries
    # knowledge time survives the crash: as of T1 the store knew exactly v1
    before = lake.read(names, D1, as_of=T1, columns=["symbol", "ts", "close"])
    assert before.height == symbols * days
    assert before["close"].unique().to_list() == [100.0]


_PG_CHILD = """
import sys, polars as pl
from quantivista.storage.postgres.bars import PostgresStore
store = PostgresStore(sys.argv[1], sys.argv[2], pool_size=1)
batch = pl.read_parquet(sys.argv[3])
print("writing", flush=True)
store.upsert(batch)
print("done", flush=True)
"""


def test_kill_9_during_a_postgres_upsert_rolls_back_whole(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    import psycopg

    from quantivista.storage.postgres.bars import PostgresStore

    schema = pg_schema + "_crash"
    store = PostgresStore(postgres_dsn, schema, pool_size=1)
    try:
        symbols, days = 100, 400
        v1 = _universe(symbols, days, 0.0, T1)
        store.upsert(v1)
        v2 = _universe(symbols, days, 5.0, T2)
        batch = tmp_path / "v2.parquet"
        v2.write_parquet(batch)
        child = subprocess.Popen(
            [sys.executable, "-c", _PG_CHILD, postgres_dsn, schema, str(batch)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        busy = (
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND (query LIKE 'COPY qv_stage%%' OR query LIKE '%%INSERT INTO bars_history%%') "
            "AND pid <> pg_backend_pid()"
        )
        with psycopg.connect(postgres_dsn, autocommit=True) as watch:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = watch.execute(busy).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL, "the upsert finished before the kill"

        names = [f"S{i:03d}" for i in range(symbols)]
        seen = store.read(names, D1, columns=["symbol", "ts", "close"])
        assert seen.height == symbols * days
        assert seen["close"].unique().to_list() == [100.0]  # all or nothing: nothing
        stats = store.upsert(v2)  # waits for the dead session's rollback, then completes
        assert (stats.inserted, stats.updated) == (0, symbols * days)
        done = store.read(names, D1, columns=["symbol", "ts", "close"])
        assert done.height == symbols * days
        assert done["close"].unique().to_list() == [105.0]
        assert store.read(names, D1, as_of=T1)["close"].unique().to_list() == [100.0]
    finally:
        store.close()
