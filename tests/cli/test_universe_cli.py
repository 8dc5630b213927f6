"""`qv universe revalidate|rollup|export|rescore` on a small lake, on Dask on 127.0.0.1.

One LocalCluster for the module (passed as --scheduler) and one command that starts its
own (--workers 1); each result is compared with the same work done in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.config import Settings
from quantivista.model.schema import coerce_bars
from quantivista.providers.simulator.market import SimulatedMarket
from quantivista.services.revalidation import revalidate
from quantivista.storage import open_backend

pytest.importorskip("distributed")

AT = datetime(2024, 3, 1, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", processes=True)  # fmt: skip
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    market = SimulatedMarket(seed=7, universe_size=10, as_of="2024-02-29")
    names = market.symbols()[:8]
    minutes = pl.concat([market.minutes(s, "2024-02-05", "2024-02-06") for s in names])
    daily = pl.concat([market.daily(s, "2023-06-01", "2024-02-29") for s in names])
    data = tmp_path_factory.mktemp("universe") / "qv"
    backend = open_backend(Settings(data_dir=data, storage={"buckets": 4}))
    try:
        for frame in (minutes, daily):
            backend.bars.upsert(coerce_bars(frame, provider="sim", job_id="j", ingested_at=AT))
    finally:
        backend.close()
    return data


def _qv(data: Path, *args: str) -> str:
    result = runner.invoke(app, ["--data-dir", str(data), "universe", *args],
                           env={"QV_STORAGE__BUCKETS": "4", "COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def test_revalidate_on_a_scheduler_counts_what_one_process_counts(
    store: Path, scheduler: str
) -> None:
    out = _qv(store, "revalidate", "--scheduler", scheduler)
    local = revalidate(Settings(data_dir=store, storage={"buckets": 4}), "1d")
    assert local.bars > 1000
    assert f"{local.bars:,} bars of 8 symbols in 4 partitions" in out
    assert f"rejected {local.rejected:,}" in out
    assert "partitions" in out  # the progress bar's line


def test_revalidate_starts_its_own_local_cluster(store: Path) -> None:
    out = _qv(store, "revalidate", "--workers", "1", "--timeframe", "1m")
    assert "revalidated 1m (dask)" in out
    assert "of 8 symbols in 4 partitions" in out


def test_rollup_export_and_rescore(store: Path, scheduler: str, tmp_path: Path) -> None:
    out = _qv(store, "rollup", "--target", "1h", "--dry-run", "--scheduler", scheduler)
    # 2 days x 8 symbols of regular-session hours (6.5 h: 7 hourly bars a day)
    assert "1h: 112 bars of 8 symbols (not stored)" in out
    out = _qv(store, "export", str(tmp_path / "out"), "--scheduler", scheduler,
              "--start", "2024-01-02", "--end", "2024-01-31")  # fmt: skip
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    rows = sum(pl.read_parquet(p).height for p in parts)
    assert len(parts) == 4 and rows == 8 * 21  # 21 sessions in January 2024
    assert f"4 parts, {rows:,} bars" in out
    out = _qv(store, "rescore", "--scheduler", scheduler)
    backend = open_backend(Settings(data_dir=store, storage={"buckets": 4}), create=False)
    try:
        stored = backend.scores.read(job_id="rescore", timeframe="1d")
    finally:
        backend.close()
    assert stored.height > 100
    assert f"{stored.height:,} day scores of 8 symbols stored" in out
