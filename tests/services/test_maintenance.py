"""Maintenance: compaction folds the bars' delta files and the quality scores' small files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from quantivista.model.timeframe import Timeframe
from quantivista.platform import Platform
from quantivista.storage.lake.bars import ParquetLake
from samples import minute_bars

M1 = Timeframe.parse("1m")


def test_compaction_folds_deltas_and_score_files(tmp_path: Path) -> None:
    symbols = [f"S{i:02d}" for i in range(12)]
    t0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
    with Platform.open(tmp_path / "qv") as p:
        for k in range(6):  # micro-batches: one job, one score file and one delta each
            p.write_bars(
                minute_bars(symbols, t0 + timedelta(minutes=k)), source="t", timeframe="1m"
            )
        scores_dir = tmp_path / "qv" / "quality" / "scores"
        assert len(list(scores_dir.glob("job_id=*/*.parquet"))) == 6
        lake = p.runtime.backend.bars
        assert isinstance(lake, ParquetLake)
        bars_before = lake.read(symbols, M1)
        scores_before = p.runtime.backend.scores.read()
        assert lake.delta_files("1m")
        removed = p.runtime.maintenance.compact()
        assert removed >= 6 + 5
        assert not list(scores_dir.glob("job_id=*/*.parquet"))
        assert len(list(scores_dir.rglob("*.parquet"))) == 1
        assert not lake.delta_files("1m")
        assert lake.read(symbols, M1).equals(bars_before)
        after = p.runtime.backend.scores.read()
        assert after.height == scores_before.height == 6 * len(symbols)
        assert after.sort(after.columns).equals(scores_before.sort(scores_before.columns))
