"""Quality scores per (symbol, timeframe, session date, job): the trend kept with the data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import polars as pl

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.quality.validate import SCORE_SCHEMA
from quantivista.storage.lake import atomic_write_parquet

__all__ = ["STORED_SCORE_SCHEMA", "QualityScoreStore"]

# one file per batch: for big batches (daily bars score one row per bar) polars' own
# multithreaded writer is about twice as fast as the per-partition pyarrow path
_BIG = 100_000

STORED_SCORE_SCHEMA = pl.Schema({**SCORE_SCHEMA, "scored_at": pl.Datetime("us", "UTC")})


class QualityScoreStore:
    """Parquet files, one per validated batch: `quality/scores/job_id=<id>/<uuid>.parquet`."""

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.dir = Path(root) / "quality" / "scores"
        self.settings = settings or StorageSettings()
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, scores: pl.DataFrame, at: datetime) -> int:
        """Store the scores of one batch, validated at `at`; return how many rows were written."""
        if scores.is_empty():
            return 0
        job = str(scores["job_id"][0])
        frame = scores.with_columns(scored_at=pl.lit(at)).select(STORED_SCORE_SCHEMA.names())
        frame = frame.cast(STORED_SCORE_SCHEMA)
        path = self.dir / f"job_id={job}" / f"{uuid4().hex}.parquet"
        if frame.height >= _BIG:
            _write_big(frame, path)
        else:
            atomic_write_parquet(frame, path, self.settings)
        return frame.height

    def read(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: str | None = None,
    ) -> pl.DataFrame:
        """Return stored scores, optionally of some symbols, one job or one timeframe."""
        pattern = f"job_id={job_id}/*.parquet" if job_id else "job_id=*/*.parquet"
        files = sorted(
            p for p in self.dir.glob(pattern) if not p.name.startswith(".")
        )  # no temporaries
        if not files:
            return pl.DataFrame(schema=STORED_SCORE_SCHEMA)
        lf = pl.scan_parquet(files, hive_partitioning=False)
        if symbols:
            lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
        if timeframe:
            lf = lf.filter(pl.col("timeframe") == timeframe)
        return lf.sort("symbol", "timeframe", "date", "scored_at").collect()

    def daily(
        self, symbols: Sequence[str] | None = None, timeframe: str | None = None
    ) -> pl.DataFrame:
        """Return one score per (symbol, timeframe, date): the latest job's (re-ingests win)."""
        df = self.read(symbols, None, timeframe)
        return (
            df.sort("scored_at", maintain_order=True)
            .group_by("symbol", "timeframe", "date", maintain_order=True)
            .last()
            .sort("symbol", "timeframe", "date")
        )


def _write_big(frame: pl.DataFrame, path: Path) -> None:
    """Write a large score file with polars, committing it by atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid4().hex}.parquet"
    try:
        frame.write_parquet(tmp, compression="zstd", compression_level=1)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError("cannot write quality scores", path=str(path), error=str(exc)) from exc
