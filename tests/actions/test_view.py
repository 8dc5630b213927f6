"""Rename-stitched and adjusted reads over data ingested from the simulated market."""

from __future__ import annotations

import polars as pl

from quantivista import Platform
from quantivista.providers.simulator.market import SimulatedMarket


def test_renamed_simulated_instrument_reads_as_one_series(platform: Platform) -> None:
    market = SimulatedMarket(seed=42, universe_size=60, as_of="2025-06-01")
    inst = market.instruments[1]
    assert inst.former_symbol is not None and inst.renamed_on is not None
    job = platform.ingest([inst.former_symbol, inst.symbol], "2022-01-01", "2024-12-31")
    assert job.records_failed == 0
    old = platform.bars(inst.former_symbol, follow_renames=False)
    new = platform.bars(inst.symbol, follow_renames=False)
    stitched = platform.bars(inst.symbol)
    assert stitched.height == old.height + new.height
    assert stitched["ts"].is_sorted() and stitched["ts"].n_unique() == stitched.height
    assert set(stitched["symbol"]) == {inst.symbol}
    assert stitched["ts"][old.height].date() == inst.renamed_on
    # the adjusted view has the same rows; a range inside the old ticker's life works too
    adjusted = platform.bars(inst.symbol, adjust="all", start="2022-03-01", end="2022-03-31")
    assert (
        adjusted.height
        == old.filter(
            (pl.col("ts") >= pl.datetime(2022, 3, 1, time_zone="UTC"))
            & (pl.col("ts") < pl.datetime(2022, 4, 1, time_zone="UTC"))
        ).height
    )
