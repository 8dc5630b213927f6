"""The query service: adjusted views cached per process, yet never stale after a write elsewhere."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from quantivista.platform import Platform
from quantivista.providers.synthetic import SyntheticProvider
from quantivista.services.queries import status_by_timeframe


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


def test_status_by_timeframe_sums_rows_and_bytes_and_spans_the_symbols() -> None:
    day = datetime(2024, 1, 2, tzinfo=UTC)
    stats = pl.DataFrame(
        {
            "timeframe": ["1m", "1d", "1d"],
            "symbol": ["AAA", "AAA", "BBB"],
            "rows": [390, 10, 20],
            "first_ts": [day, day, day - timedelta(days=5)],
            "last_ts": [day, day + timedelta(days=9), day],
            "bytes": [1000, 100, 200],
        }
    )
    out = status_by_timeframe(stats)
    assert out["timeframe"].to_list() == ["1d", "1m"]
    first = out.row(0, named=True)
    assert (first["symbols"], first["rows"], first["bytes"]) == (2, 30, 300)
    assert (first["first"], first["last"]) == (day - timedelta(days=5), day + timedelta(days=9))
