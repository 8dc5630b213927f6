"""Quality scores per (symbol, timeframe, session date, job): the trend kept with the data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import numpy as np
import polars as pl
import pyarrow as pa

from quantivista.config import StorageSettings
from quantivista.errors import StorageError
from quantivista.model.schema import STORED_SCORE_SCHEMA
from quantivista.storage.lake.files import ensure_dir, fsync_path, is_temporary
from quantivista.storage.lake.layout import LakeLayout

__all__ = ["ParquetScoreStore", "latest_scores", "score_runs"]

# one file per batch. Big batches (daily bars score one row per bar) store runs of days
# with the same score as one row with a list of dates (`<uuid>.runs.parquet`): a clean
# batch of 500 symbols is 500 rows, not a million, and its file is written 10x faster
_BIG = 100_000
_RUNS = ".runs.parquet"
_RUN_KEY = ("symbol", "timeframe", "job_id", "rows", "rejected", "flagged", "missing", "score")


class ParquetScoreStore:
    """Parquet files, one per validated batch: `quality/scores/job_id=<id>/<uuid>.parquet`.

    A big batch's file is `<uuid>.runs.parquet`: one row per run of days with the same
    score, the days as a list; `read` turns it back into one row per day.
    """

    def __init__(self, root: Path, settings: StorageSettings | None = None) -> None:
        self.dir = LakeLayout(Path(root)).scores
        self.settings = settings or StorageSettings()

    def add(self, scores: pl.DataFrame, at: datetime) -> int:
        """Store the scores of one batch, validated at `at`; return how many rows were written."""
        if scores.is_empty():
            return 0
        job = str(scores["job_id"][0])
        frame = scores.with_columns(scored_at=pl.lit(at)).select(STORED_SCORE_SCHEMA.names())
        frame = frame.cast(STORED_SCORE_SCHEMA)
        folder = self.dir / f"job_id={job}"
        if frame.height >= _BIG:
            _write(score_runs(frame), folder / f"{uuid4().hex}{_RUNS}", self.settings.fsync)
        else:
            _write(frame, folder / f"{uuid4().hex}.parquet", self.settings.fsync)
        return frame.height

    def read(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: str | None = None,
    ) -> pl.DataFrame:
        """Return stored scores, optionally of some symbols, one job or one timeframe."""
        pattern = f"job_id={job_id}/*.parquet" if job_id else "job_id=*/*.parquet"
        files = sorted(p for p in self.dir.glob(pattern) if not is_temporary(p))
        if not files:
            return pl.DataFrame(schema=STORED_SCORE_SCHEMA)
        rows = [p for p in files if not p.name.endswith(_RUNS)]
        runs = [p for p in files if p.name.endswith(_RUNS)]
        parts = [pl.scan_parquet(rows, hive_partitioning=False)] if rows else []
        if runs:
            lf_runs = pl.scan_parquet(runs, hive_partitioning=False).explode("date")
            parts.append(lf_runs.select(STORED_SCORE_SCHEMA.names()))
        lf = pl.concat(parts)
        if symbols:
            lf = lf.filter(pl.col("symbol").is_in(list(symbols)))
        if timeframe:
            lf = lf.filter(pl.col("timeframe") == timeframe)
        return lf.sort("symbol", "timeframe", "date", "scored_at").collect()

    def daily(
        self, symbols: Sequence[str] | None = None, timeframe: str | None = None
    ) -> pl.DataFrame:
        """Return one score per (symbol, timeframe, date): the latest job's (re-ingests win)."""
        return latest_scores(self.read(symbols, None, timeframe))


def latest_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Return one score per (symbol, timeframe, date) of `read`'s output: the latest one's."""
    return (
        scores.sort("scored_at", maintain_order=True)
        .group_by("symbol", "timeframe", "date", maintain_order=True)
        .last()
        .sort("symbol", "timeframe", "date")
    )


def score_runs(frame: pl.DataFrame) -> pl.DataFrame:
    """Return `frame` as runs of consecutive rows that differ only in their date.

    One row per run with the dates as a list (exploding it gives `frame` back, in order).
    Columns that hold one value throughout are not compared row by row.
    """
    varying = [
        c for c in _RUN_KEY if frame.select(pl.col(c).ne_missing(pl.col(c).first()).any()).item()
    ]
    new = np.ones(frame.height, dtype=bool)
    if varying:
        changed = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift(1)) for c in varying])
        new[1:] = frame.select(changed.slice(1)).to_series().to_numpy()
    starts = np.flatnonzero(new)
    offsets = pa.array(np.append(starts, frame.height).astype(np.int32))
    dates = pa.ListArray.from_arrays(offsets, frame["date"].to_arrow())
    head = frame.drop("date")[starts]
    return head.with_columns(pl.Series("date", dates, dtype=pl.List(pl.Date)))


def _write(frame: pl.DataFrame, path: Path, fsync: bool) -> None:
    """Write a score file with polars, committing it by atomic rename (fsynced as the
    lake's files are). Polars' writer: a streaming micro-batch's 500 rows cost a third
    of the lake's dictionary-encoding writer's set-up."""
    ensure_dir(path.parent)
    tmp = path.parent / f".tmp-{uuid4().hex}.parquet"
    try:
        frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=False)
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_path(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError("cannot write quality scores", path=str(path), error=str(exc)) from exc
