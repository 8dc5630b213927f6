"""`qv demo --via-simulator`: the demo universe through the real vendor clients."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.platform import Platform


def test_demo_via_simulator_ingests_through_vendors_and_shows_provider_stats(
    tmp_path: Path,
) -> None:
    args = ["--data-dir", str(tmp_path), "demo", "--via-simulator"]
    result = CliRunner().invoke(
        app, [*args, "--symbols", "6", "--years", "1", "--sessions", "1"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "provider simulator on http://127.0.0.1:" in out
    assert "provider calls (this demo)" in out  # the `qv providers` table
    assert "circuit breaker transitions" in out and "iex_cloud" in out  # down: it opened
    assert "rate-limit violations counted: 0" in out
    with Platform.open(tmp_path) as p:
        daily = p.status().filter(pl.col("timeframe") == "1d")
        assert daily.height == 6
        stored = p.bars(daily["symbol"].to_list())
        assert set(stored["provider"].unique()) <= {"yahoo", "polygon"}  # vendors, not synthetic
        assert p.jobs()[-1].status.value == "succeeded"  # the daily job
