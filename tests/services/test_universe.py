"""Universe-wide work on Dask (LocalCluster on 127.0.0.1) gives what one process gives.

One lake in 8 buckets, one cluster of 2 worker processes for the module: rollups of
1-minute bars to 1h and 1d, adjusted exports (splits and dividends of the simulated
market), and day quality scores under the current rules, each compared with the
single-process result of the same function.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from quantivista.config import Settings
from quantivista.model.schema import coerce_actions, coerce_bars
from quantivista.providers.simulator.market import SimulatedMarket
from quantivista.services.universe import (
    export_adjusted,
    map_partitions,
    partitions,
    rescore,
    rollups,
)
from quantivista.storage import open_backend
from quantivista.storage.lake.bars import bucket_of

pytest.importorskip("distributed")

AT = datetime(2024, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def market() -> SimulatedMarket:
    return SimulatedMarket(seed=7, universe_size=14, as_of="2024-02-29")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=None, processes=True)  # fmt: skip
    with Client(cluster) as dask:
        yield dask
    cluster.close()


def _store(tmp: Path, bars: pl.DataFrame, actions: pl.DataFrame | None = None) -> Settings:
    settings = Settings(data_dir=tmp / "qv", storage={"buckets": 8})
    backend = open_backend(settings)
    try:
        backend.bars.upsert(bars)
        if actions is not None and actions.height:
            backend.actions.upsert(actions)
    finally:
        backend.close()
    return settings


def test_partitions_are_the_lakes_buckets_and_cover_every_symbol(tmp_path: Path) -> None:
    symbols = [f"S{i}" for i in range(40)]
    groups = partitions(symbols, 8)
    assert sorted(s for g in groups for s in g) == sorted(symbols)
    assert all(len({bucket_of(s, 8) for s in g}) == 1 for g in groups)
    settings = Settings(data_dir=tmp_path, storage={"buckets": 8})
    local = map_partitions(settings, _echo, symbols)
    assert local == [(sorted(symbols), 0)]


def _echo(settings: Settings, symbols: list[str], number: int) -> tuple[list[str], int]:
    return symbols, number


def test_dask_rollups_equal_the_single_process_rollups(
    tmp_path: Path, market: SimulatedMarket, client: Any
) -> None:
    names = market.symbols()[:12]
    minutes = pl.concat(
        [
            coerce_bars(
                market.minutes(s, "2024-02-05", "2024-02-07"),
                provider="sim",
                job_id="j",
                ingested_at=AT,
            )
            for s in names
        ]
    )
    local_settings = _store(tmp_path / "local", minutes)
    dask_settings = _store(tmp_path / "dask", minutes)
    local = rollups(local_settings, ["1h", "1d"])
    on_dask = rollups(dask_settings, ["1h", "1d"], engine="dask", client=client)
    assert local.filter(pl.col("timeframe") == "1d").height == 12 * 3  # 12 symbols x 3 days
    assert on_dask.equals(local)
    backend = open_backend(dask_settings, create=False)
    try:  # written into the store: the daily bars read back
        daily = backend.bars.read(names, "1d")
    finally:
        backend.close()
    assert (
        daily.sort("symbol", "ts")
        .select("symbol", "ts", "close")
        .equals(local.filter(pl.col("timeframe") == "1d").select("symbol", "ts", "close"))
    )


def test_dask_adjusted_export_parts_equal_the_single_process_export(
    tmp_path: Path, market: SimulatedMarket, client: Any
) -> None:
    names = market.symbols()[:14]
    daily = pl.concat([market.daily(s, "2020-01-02", "2024-02-29") for s in names])
    bars = coerce_bars(daily, provider="sim", job_id="j", ingested_at=AT)
    actions = coerce_actions(market.actions().filter(pl.col("symbol").is_in(names)),
                             provider="sim")  # fmt: skip
    assert actions.height > 0  # something to adjust for
    settings = _store(tmp_path, bars, actions)
    local = export_adjusted(settings, tmp_path / "local", adjust="all")
    on_dask = export_adjusted(settings, tmp_path / "dask", adjust="all", engine="dask",
                              client=client)  # fmt: skip
    assert len(local) == 1 and len(on_dask) > 1
    assert sum(rows for _, rows in on_dask) == sum(rows for _, rows in local) == bars.height
    whole = pl.read_parquet(local[0][0]).sort("symbol", "ts")
    parts = pl.concat([pl.read_parquet(path) for path, _ in on_dask]).sort("symbol", "ts")
    assert parts.equals(whole)
    raw = bars.sort("symbol", "ts")
    assert not whole["close"].equals(raw["close"])  # the actions changed the prices


def test_dask_rescore_equals_the_single_process_scores(
    tmp_path: Path, make_bars: Any, client: Any
) -> None:
    bars = make_bars(24, 60)
    broken = pl.int_range(pl.len()).is_in([5, 400, 901])
    bars = bars.with_columns(low=pl.when(broken).then(pl.col("high") * 1.1).otherwise("low"))
    settings = _store(tmp_path, bars)
    local = rescore(settings, write=False)
    on_dask = rescore(settings, engine="dask", client=client)
    assert local.height == 24 * 60  # a score per symbol and session
    assert on_dask.equals(local)
    assert (local["score"] < 1).sum() == 3  # the three broken rows lower their days
    backend = open_backend(settings, create=False)
    try:  # the Dask run stored its scores, under the rescore job
        stored = backend.scores.read(job_id="rescore")
    finally:
        backend.close()
    assert stored.drop("scored_at").sort(local.columns[:3]).equals(local)
