"""`qv quality` and `qv quarantine-release` over a store written through the platform."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from quantivista.cli import app
from quantivista.platform import Platform


def test_quality_views_and_release(tmp_path: Path, ibm: tuple[pl.DataFrame, ...]) -> None:
    bars, _ = ibm
    part = bars.slice(100, 200).drop("quality_flags", "ingested_at", "job_id")
    broken = part.with_columns(
        volume=pl.when(pl.int_range(pl.len()) == 3).then(-1.0).otherwise("volume")
    ).filter(pl.int_range(pl.len()) != 50)
    data = tmp_path / "data"
    with Platform.open(data) as p:
        report = p.write_bars(broken, source="lean", timeframe="1d")
    runner = CliRunner()
    sym = runner.invoke(app, ["--data-dir", str(data), "quality", "IBM"])
    assert sym.exit_code == 0, sym.output
    assert "quality score by week" in sym.output
    assert "worst days" in sym.output
    job = runner.invoke(app, ["--data-dir", str(data), "quality", report.job_id])
    assert job.exit_code == 0, job.output
    assert "negative_volume" in job.output and "missing_bar" in job.output
    assert "column profile" in job.output
    missing = runner.invoke(app, ["--data-dir", str(data), "quality", "job-nope"])
    assert missing.exit_code == 2
    rel = runner.invoke(
        app, ["--data-dir", str(data), "quarantine-release", "--rule", "negative_volume",
              "--demote", "negative_volume"],
    )  # fmt: skip
    assert rel.exit_code == 0, rel.output
    with Platform.open(data) as p:
        assert p.quarantine().is_empty()
        assert p.bars("IBM").height == 199


def test_a_release_with_a_keyless_corrected_bar_is_one_error_line(
    tmp_path: Path, ibm: tuple[pl.DataFrame, ...]
) -> None:
    bars, _ = ibm
    part = bars.slice(100, 20).drop("quality_flags", "ingested_at", "job_id")
    broken = part.with_columns(
        volume=pl.when(pl.int_range(pl.len()) == 3).then(-1.0).otherwise("volume")
    )
    data = tmp_path / "data"
    with Platform.open(data) as p:
        p.write_bars(broken, source="lean", timeframe="1d")
        held = p.quarantine()
    assert held.height == 1
    # the held bar fixed, and a bar without its ts: validation takes no null key
    fixed = broken.slice(3, 2).select(
        "symbol", "timeframe", "open", "high", "low", "close",
        volume=pl.lit(100.0), ts=pl.when(pl.int_range(pl.len()) == 0).then(pl.col("ts")),
    )  # fmt: skip
    corrected = tmp_path / "fixed.csv"
    fixed.write_csv(corrected)

    result = CliRunner().invoke(
        app, ["--data-dir", str(data), "quarantine-release", "--rule", "negative_volume",
              "--corrected", str(corrected)],
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "must not be null" in result.output
    assert "Traceback" not in result.output and result.exception is not None
    with Platform.open(data) as p:
        assert p.quarantine().equals(held)  # nothing released
        assert p.bars("IBM").height == 19
