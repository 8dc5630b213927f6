"""Universe-wide re-validation: Dask on a LocalCluster finds what the single process finds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.config import Settings
from quantivista.services.revalidation import partitions, revalidate
from quantivista.storage import open_backend
from quantivista.storage.lake.bars import bucket_of

pytest.importorskip("distributed")


@pytest.fixture
def damaged_store(tmp_path: Path, make_bars: Any) -> tuple[Settings, int]:
    """A lake of 24 symbols x 80 sessions in 8 buckets, 5 rows broken after validation."""
    settings = Settings(data_dir=tmp_path / "qv", storage={"buckets": 8})
    bars = make_bars(24, 80)
    broken = pl.int_range(pl.len()).is_in([3, 170, 900, 1500, 1901])
    bars = bars.with_columns(  # stored as if an old rule set had let them through
        low=pl.when(broken).then(pl.col("high") * 1.05).otherwise("low")
    )
    backend = open_backend(settings)
    try:
        backend.bars.upsert(bars)  # the store's write path without the validator
    finally:
        backend.close()
    return settings, 5


def test_partitions_are_the_lakes_buckets() -> None:
    groups = partitions([f"S{i}" for i in range(40)], 8)
    assert sorted(s for g in groups for s in g) == sorted(f"S{i}" for i in range(40))
    for group in groups:
        assert len({bucket_of(s, 8) for s in group}) == 1
    assert len(groups) == len({bucket_of(f"S{i}", 8) for i in range(40)})


def test_dask_finds_what_the_single_process_validator_finds(
    damaged_store: tuple[Settings, int],
) -> None:
    settings, broken = damaged_store
    local = revalidate(settings, engine="local")
    assert local.bars == 24 * 80
    assert local.rejected == broken
    assert local.rule_counts == {"ohlc_inconsistent": broken}
    dask = revalidate(settings, engine="dask")  # a LocalCluster of 2 processes on 127.0.0.1
    assert dask.engine == "dask" and dask.partitions > 1
    assert dask.per_symbol.equals(local.per_symbol)
    assert dask.rule_counts == local.rule_counts


def test_qv_revalidate_prints_the_rules_findings(damaged_store: tuple[Settings, int]) -> None:
    settings, broken = damaged_store
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir), "revalidate"]
    env = {"QV_STORAGE__BUCKETS": "8", "COLUMNS": "200"}
    shown = runner.invoke(app, base, env=env)
    assert shown.exit_code == 0, shown.output
    assert "ohlc_inconsistent" in shown.output and f"rejected {broken};" in shown.output
    assert "revalidated 1d (local)" in shown.output
    local = runner.invoke(app, [*base, "--format", "json"], env=env)
    on_dask = runner.invoke(app, [*base, "--dask", "--workers", "1", "--format", "json"], env=env)
    assert on_dask.exit_code == 0, on_dask.output
    assert json.loads(on_dask.output) == json.loads(local.output)
    assert sum(r["rejected"] for r in json.loads(local.output)) == broken
    # `qv universe revalidate` is the same command with Dask by default
    universe = [*base[:-1], "universe", "revalidate"]
    same = runner.invoke(app, [*universe, "--local", "--format", "json"], env=env)
    assert same.exit_code == 0, same.output
    assert json.loads(same.output) == json.loads(local.output)
    shown_too = runner.invoke(app, [*universe, "--local"], env=env)

    def summary(output: str) -> str:  # the last line, without the seconds it took
        return re.sub(r"; [0-9.]+ s$", "", output.strip().splitlines()[-1])

    assert summary(shown_too.output) == summary(shown.output)
    assert summary(shown.output).endswith(f"rejected {broken}")
