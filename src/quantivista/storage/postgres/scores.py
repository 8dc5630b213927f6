"""Quality scores in PostgreSQL: `quality_scores`, one row per run of days with one score.

A batch of daily bars scores one row per symbol-day: 1.26 million rows for 500 symbols over
ten years. Stored row by row that is a COPY of 1.26 million rows and an index entry each;
stored as runs (consecutive days of a series whose counts and score are equal, the days in
a `date[]`) a clean batch is one row per series. Every batch is stored this way, small ones
too: a run of one day is still a run, and one layout means one read path. `read` turns runs
back into one row per day; the view `quality_scores_daily` does the same in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
from psycopg import sql
from psycopg_pool import ConnectionPool

from quantivista.model.schema import STORED_SCORE_SCHEMA
from quantivista.storage.lake.scores import latest_scores, score_runs
from quantivista.storage.postgres.db import copy_frame, read_frame, transaction, wire_columns

__all__ = ["PgScoreStore"]

_RUN_SCHEMA = pl.Schema(
    {
        **{c: t for c, t in STORED_SCORE_SCHEMA.items() if c != "date"},
        "dates": pl.List(pl.Date()),
    }
)


class PgScoreStore:
    """The `ScoreStore` of the PostgreSQL backend (runs of days, see the module docstring)."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def add(self, scores: pl.DataFrame, at: datetime) -> int:
        """Store the scores of one validated batch (`SCORE_SCHEMA`); return the rows stored."""
        if scores.is_empty():
            return 0
        job = str(scores["job_id"][0])  # the batch's job, as the lake's folder names it
        frame = scores.with_columns(scored_at=pl.lit(at)).select(STORED_SCORE_SCHEMA.names())
        frame = frame.cast(STORED_SCORE_SCHEMA)
        runs = score_runs(frame).rename({"date": "dates"}).select(_RUN_SCHEMA.names())
        with transaction(self.pool, "writing quality scores") as conn:
            copy_frame(conn, "quality_scores", runs.with_columns(batch_job_id=pl.lit(job)))
        return frame.height

    def read(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: str | None = None,
    ) -> pl.DataFrame:
        """Return stored scores with `scored_at`, sorted by symbol, timeframe, date, scored_at."""
        where: list[sql.Composable] = []
        params: dict[str, Any] = {}
        if symbols:
            where.append(sql.SQL("symbol = ANY(%(symbols)s)"))
            params["symbols"] = list(symbols)
        if job_id:
            where.append(sql.SQL("batch_job_id = %(job)s"))
            params["job"] = job_id
        if timeframe:
            where.append(sql.SQL("timeframe = %(tf)s"))
            params["tf"] = timeframe
        query = sql.SQL("SELECT {cols} FROM quality_scores {where}").format(
            cols=wire_columns(_RUN_SCHEMA),
            where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        )
        with transaction(self.pool, "reading quality scores") as conn:
            runs = read_frame(conn, query, params, _RUN_SCHEMA)
        rows = runs.explode("dates").rename({"dates": "date"}).select(STORED_SCORE_SCHEMA.names())
        return rows.sort("symbol", "timeframe", "date", "scored_at")

    def daily(
        self, symbols: Sequence[str] | None = None, timeframe: str | None = None
    ) -> pl.DataFrame:
        """Return one score per (symbol, timeframe, date): the latest job's."""
        return latest_scores(self.read(symbols, None, timeframe))
