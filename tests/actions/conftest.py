"""Fixtures of the corporate-action tests: the real fixture files and loaded frames."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from quantivista import Platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "corporate_actions"
LEAN = FIXTURES / "lean"


def alpha_vantage_frame(symbol: str) -> pl.DataFrame:
    """Return an Alpha Vantage daily-adjusted fixture, oldest first, with a UTC `ts`."""
    path = FIXTURES / "alpha_vantage" / f"daily_adjusted_{symbol}.csv"
    return (
        pl.read_csv(path)
        .with_columns(
            ts=pl.col("timestamp").str.to_date().cast(pl.Datetime("us", "UTC")),
            symbol=pl.lit(symbol),
        )
        .sort("ts")
    )


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    """Return an empty embedded platform in a temporary directory."""
    return Platform.open(tmp_path / "qv")
