"""The parallel series pass equals the serial one (cut at series boundaries)."""

from __future__ import annotations

import polars as pl

from quantivista.config import QualitySettings
from quantivista.quality.series import _series_context, series_context

from .conftest import inject_spikes, lean_daily


def test_parallel_split_matches_serial() -> None:
    base = lean_daily("ibm")
    spiked, _ = inject_spikes(base, count=40, seed=5)
    frames = [spiked.with_columns(symbol=pl.lit(f"S{i:02d}")) for i in range(40)]
    df = pl.concat(frames).with_columns(
        _new=pl.col("symbol") != pl.col("symbol").shift(1).fill_null(""),
        _valid=pl.lit(True),
    )
    assert df.height > 200_000
    settings = QualitySettings()
    par = series_context(df, None, settings)
    ser = _series_context(df, None, settings)
    assert par.equals(ser)
    assert par["_spike"].sum() >= 40 * 30  # the injected spikes, found in every copy
