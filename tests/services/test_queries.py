"""The query service: adjusted views cached per process, yet never stale after a write elsewhere."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from quantivista.platform import Platform
from quantivista.providers.synthetic import SyntheticProvider


def test_an_adjusted_view_follows_a_write_made_by_another_process(tmp_path: Path) -> None:
    with Platform.open(tmp_path / "qv") as reader, Platform.open(tmp_path / "qv") as writer:
        synthetic = writer.provider("synthetic")
        assert isinstance(synthetic, SyntheticProvider)
        split = (
            synthetic.market.actions().filter(pl.col("action_type") == "split").row(0, named=True)
        )
        symbol, ex = split["symbol"], split["ex_date"]
        writer.ingest(symbol, f"{ex.year - 1}-01-01", f"{ex.year - 1}-06-30")
        first = reader.bars(symbol, adjust="splits")
        assert reader.bars(symbol, adjust="splits") is first  # cached
        writer.ingest(symbol, f"{ex.year - 1}-07-01", f"{ex.year}-12-31")  # another instance
        time.sleep(0.6)  # the data epoch is read at most twice a second
        later = reader.bars(symbol, adjust="splits")
    assert later.height > first.height
    # the split stored by the other instance now adjusts the bars read the first time
    both = first.join(later, on="ts", suffix="_later")
    assert both.height == first.height
    ratio = (both["close"] / both["close_later"] - split["ratio"]).abs().max()
    assert ratio is not None and float(ratio) < 1e-9  # type: ignore[arg-type]
