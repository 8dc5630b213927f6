"""`ingest.keep_recent_history`: write_bars micro-batches validated with the bars they stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from quantivista.clock import TestClock
from quantivista.config import Settings, StorageSettings
from quantivista.model.timeframe import Timeframe
from quantivista.pipeline.messages import BatchId
from quantivista.runtime import Runtime

T0 = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)
SYMBOLS = ["AAA", "BBB"]


def minute(m: int, close: float | None = None) -> pl.DataFrame:
    prices = [close or (100.0 + 0.1 * (m % 3)), 50.0 + 0.05 * (m % 2)]
    return pl.DataFrame(
        {"symbol": SYMBOLS, "ts": [T0 + timedelta(minutes=m)] * 2, "open": prices,
         "high": prices, "low": prices, "close": prices, "volume": [10.0, 10.0]},
    )  # fmt: skip


def settings(root: Path, keep: bool) -> Settings:
    return Settings(
        data_dir=root,
        storage=StorageSettings(write_threads=1),
        ingest={"keep_recent_history": keep},
    )


def run(root: Path, keep: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[pl.DataFrame, int]:
    """Write 30 one-minute micro-batches (a spike at minute 24); return the stored bars and
    how many history reads the store answered after the first batch."""
    with Runtime.from_settings(settings(root, keep), clock=TestClock(T0)) as rt:
        lake = rt.backend.bars
        rt.writes.write_bars(minute(0), source="s", timeframe="1m")
        reads: list[object] = []
        real = lake.recent
        monkeypatch.setattr(lake, "recent", lambda *a, **k: reads.append(a) or real(*a, **k))
        for m in range(1, 30):
            rt.writes.write_bars(minute(m, 160.0 if m == 24 else None), source="s",
                                 timeframe="1m")  # fmt: skip
        monkeypatch.undo()
        out = lake.read(SYMBOLS, Timeframe.parse("1m")).drop("ingested_at", "job_id")
        return out.sort("symbol", "ts"), len(reads)


def test_kept_history_stores_what_store_reads_store_and_reads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, kept_reads = run(tmp_path / "kept", True, monkeypatch)
    read, store_reads = run(tmp_path / "read", False, monkeypatch)
    assert kept.height == 60 and (kept["quality_flags"] != 0).any()  # the spike was judged
    assert kept.equals(read)
    assert store_reads == 29 and kept_reads == 0


def test_bars_another_writer_stores_make_it_read_those_series_again(tmp_path: Path) -> None:
    with Runtime.from_settings(settings(tmp_path, True), clock=TestClock(T0)) as rt:
        for m in range(3):
            rt.writes.write_bars(minute(m), source="s", timeframe="1m")
        recent = rt.writes._recent["1m"]
        assert set(recent.covered) == set(SYMBOLS)
        # another writer of this process (an ingestion job, a release) stores AAA
        other = minute(3).filter(pl.col("symbol") == "AAA")
        rt.runner.write(other, source="job", batch_id=BatchId("job-other"), timeframe="1m")
        assert set(recent.covered) == {"BBB"}
        rt.writes.write_bars(minute(4), source="s", timeframe="1m")  # reads AAA again
        assert set(recent.covered) == set(SYMBOLS)
        assert recent.frame is not None
        aaa = recent.frame.filter(pl.col("symbol") == "AAA")["ts"].to_list()
        assert T0 + timedelta(minutes=3) in aaa  # the other writer's bar is in the history
