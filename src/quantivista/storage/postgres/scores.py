"""Quality scores in PostgreSQL: `quality_scores`, one row per series of a batch, runs of days.

A batch of daily bars scores one row per symbol-day: 1.26 million rows for 500 symbols over
ten years. Stored row by row, that is 1.26 million rows to COPY and as many entries in every
index. Here a batch is stored as one row per series (symbol, timeframe, job): `dates` holds
every scored day in order, and the scores come as runs of consecutive days with the same
counts and score (`run_days` days each, then `rows`, `rejected`, `flagged`, `missing`,
`score` per run). A clean series is one run; a series whose every other day is flagged is
still one row, with arrays as long as its days. The row count (and so the index work) is
the number of series, whatever the scores are.

`read` turns the runs back into one row per day; the view `quality_scores_daily` does the
same in SQL.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from psycopg import sql
from psycopg_pool import ConnectionPool

from quantivista.model.schema import STORED_SCORE_SCHEMA
from quantivista.storage.lake.scores import latest_scores, score_runs
from quantivista.storage.postgres.db import (
    copy_frame,
    listing_filters,
    maps_storage_errors,
    transaction,
    where_all,
)

__all__ = ["PgScoreStore"]

_SERIES = ("symbol", "timeframe", "job_id")
_VALUES = ("rows", "rejected", "flagged", "missing", "score")
# the CSV a read receives: arrays as text, the instant as Unix microseconds
_WIRE = pl.Schema(
    {
        "symbol": pl.String(),
        "timeframe": pl.String(),
        "job_id": pl.String(),
        "scored_at": pl.Int64(),
        "dates": pl.String(),
        "run_days": pl.String(),
        **{c: pl.String() for c in _VALUES},
    }
)
_SELECT = sql.SQL(
    "SELECT symbol, timeframe, job_id, (extract(epoch FROM scored_at) * 1000000)::int8,"
    " dates::text, run_days::text, rows::text, rejected::text, flagged::text, missing::text,"
    " score::text FROM quality_scores"
)


def _series(frame: pl.DataFrame, batch_job_id: str) -> pl.DataFrame:
    """Return a batch (`STORED_SCORE_SCHEMA`) as one row per series with its runs of days."""
    # each series one block, its days in the order given (a stable sort)
    frame = frame.sort(*_SERIES, maintain_order=True, nulls_last=False)
    runs = score_runs(frame)
    return runs.group_by(*_SERIES, maintain_order=True).agg(
        pl.lit(batch_job_id).first().alias("batch_job_id"),
        pl.col("scored_at").first(),
        pl.col("date").list.explode(keep_nulls=False, empty_as_null=False).alias("dates"),
        pl.col("date").list.len().cast(pl.Int32).alias("run_days"),
        *(pl.col(c) for c in _VALUES),
    )


def _days(wire: pl.DataFrame) -> pl.DataFrame:
    """Return the rows `_SELECT` gave (arrays as text) as one row per day, in stored order."""
    if wire.is_empty():
        return pl.DataFrame(schema=STORED_SCORE_SCHEMA)
    arrays = ("dates", "run_days", *_VALUES)
    # "{1,2,NULL}" -> ["1", "2", "NULL"]: split every array, explode, then parse all at once
    split = wire.with_columns(pl.col(c).str.strip_chars("{}").str.split(",") for c in arrays)
    dates = split.get_column("dates").explode().str.to_date("%Y-%m-%d")
    runs = split.drop("dates").explode("run_days", *_VALUES)
    runs = runs.with_columns(
        pl.col("run_days").cast(pl.Int64),
        *(pl.col(c).cast(STORED_SCORE_SCHEMA[c], strict=False) for c in _VALUES),
        pl.from_epoch("scored_at", "us").dt.replace_time_zone("UTC"),
    )
    run_of_day = np.repeat(np.arange(runs.height), runs.get_column("run_days").to_numpy())
    days = runs.drop("run_days")[run_of_day].with_columns(date=dates)
    return days.select(STORED_SCORE_SCHEMA.names()).cast(STORED_SCORE_SCHEMA)


@maps_storage_errors
class PgScoreStore:
    """The `ScoreStore` of the PostgreSQL backend (series with runs, see the module docstring)."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def add(self, scores: pl.DataFrame, at: datetime) -> int:
        """Store the scores of one validated batch (`SCORE_SCHEMA`); return the rows stored."""
        if scores.is_empty():
            return 0
        job = str(scores["job_id"][0])  # the batch's job, as the lake's folder names it
        frame = scores.with_columns(scored_at=pl.lit(at)).select(STORED_SCORE_SCHEMA.names())
        frame = frame.cast(STORED_SCORE_SCHEMA)
        series = _series(frame, job)
        with transaction(self.pool, "writing quality scores") as conn:
            copy_frame(conn, "quality_scores", series)
        return frame.height

    def read(
        self,
        symbols: Sequence[str] | None = None,
        job_id: str | None = None,
        timeframe: str | None = None,
    ) -> pl.DataFrame:
        """Return stored scores with `scored_at`, sorted by symbol, timeframe, date, scored_at."""
        where, params = listing_filters(symbols, job_id)
        if timeframe:
            where.append(sql.SQL("timeframe = %(tf)s"))
            params["tf"] = timeframe
        query = sql.SQL("COPY ({select} {where}) TO STDOUT (FORMAT CSV)").format(
            select=_SELECT,
            where=where_all(where),
        )
        with transaction(self.pool, "reading quality scores") as conn:
            conn.execute("SET LOCAL datestyle = 'ISO, YMD'")  # dates in arrays as YYYY-MM-DD
            with conn.cursor() as cur, cur.copy(query, params) as cp:
                data = b"".join(bytes(chunk) for chunk in cp)
        wire = (
            pl.read_csv(io.BytesIO(data), schema=_WIRE, has_header=False)
            if data
            else pl.DataFrame(schema=_WIRE)
        )
        return _days(wire).sort("symbol", "timeframe", "date", "scored_at")

    def daily(
        self, symbols: Sequence[str] | None = None, timeframe: str | None = None
    ) -> pl.DataFrame:
        """Return one score per (symbol, timeframe, date): the latest job's."""
        return latest_scores(self.read(symbols, None, timeframe))

    def close(self) -> None:
        """Nothing runs in the background here (the pool is the backend's)."""
