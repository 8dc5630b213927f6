"""Shape checked rows into a lake table's columns (the specification's), with lineage.

- `portfolio_data_lake`: ingestion_date, portfolio_id, data_type, data_payload (every other
  column), ingestion_job_id, quality_score;
- `execution_data_lake`: execution_date (or the date of `execution_time`), trade_id,
  order_data (`order_*` columns), execution_data (the rest), settlement_data
  (`settlement_*`), ingestion_job_id;

The specification's JSON documents are Parquet structs: typed nested columns that DuckDB
reads as STRUCT (`to_document(order_data)` gives the JSON text) and Polars as `pl.Struct`, at
no encoding cost (JSON text was a fifth of a job's time).
- typed tables (risk, performance, market intelligence, instrument analytics): the columns
  as they are, plus ingestion_date and ingestion_job_id.

Every table also gets `source_id`, `input_uri` and `input_offset`: the row's lineage.
Rows that cannot be placed (no trade id, a partition value that cannot be a folder name)
come back as rejected records with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from quantivista.errors import InvalidInputError
from quantivista.model.workflow import LAKE_TABLES
from quantivista.reporting.transform import REJECTED_SCHEMA, reject

__all__ = ["INPUT_COLUMN", "KEEP_COLUMN", "OFFSET_COLUMN", "LakeRows", "shape"]

# columns the job engine adds to every input row (the row's place in its input)
INPUT_COLUMN = "_qv_input"
OFFSET_COLUMN = "_qv_offset"
# the flat rows' flag of the rows to write, and the prefix of their payload columns
KEEP_COLUMN = "_qv_keep"
_PAYLOAD = "_qv_p."
_SAFE = r"^[A-Za-z0-9_.:-]{1,128}$"


def _document(columns: list[str]) -> pl.Expr:
    """A struct of payload columns of the flat rows (named back to the input's names)."""
    if not columns:
        return pl.struct(pl.lit(None, dtype=pl.Boolean).alias("none"))
    return pl.struct([pl.col(_PAYLOAD + c).alias(c) for c in columns])


def _misplaced(
    frame: pl.DataFrame, keep: pl.Expr, bad: pl.Expr, reason: str
) -> tuple[pl.Expr, pl.DataFrame]:
    """Return the rows to write (an expression) and the kept rows `bad` rejects."""
    bad = bad.fill_null(True)
    rows = frame.filter(keep & bad)
    if rows.is_empty():
        return keep, pl.DataFrame(schema=REJECTED_SCHEMA)
    return keep & ~bad, reject(rows, "lake", reason)


@dataclass
class LakeRows:
    """A job's rows for one lake table, as the lake writer takes them.

    `frame`: flat rows (a plan): the partition keys, `KEEP_COLUMN` (false on rows left
    out) and the columns the file's columns are made of; `columns`: a partition's file
    columns (None: every column but the keys). Nested documents are built per partition,
    after the split: a struct of a partition's columns costs nothing, while splitting
    struct columns costs twice what splitting their flat fields does.
    """

    frame: pl.LazyFrame
    columns: list[pl.Expr] | None = None


def shape(
    frame: pl.DataFrame,
    table: str,
    *,
    job_id: str,
    source_id: str,
    ingestion_date: date,
    quality_score: float,
    data_type: str,
    keep: pl.Expr | None = None,
) -> tuple[LakeRows, pl.DataFrame]:
    """Return the kept rows (`keep`: all) for `table`, as a plan the lake writer runs (the
    rows are copied once, into their partitions), and the rows that could not be placed."""
    if table not in LAKE_TABLES:
        raise InvalidInputError(f"unknown lake table {table!r}", known=", ".join(LAKE_TABLES))
    keep = pl.lit(True) if keep is None else keep
    lineage = [
        pl.lit(job_id).alias("ingestion_job_id"),
        pl.lit(source_id).alias("source_id"),
        pl.col(INPUT_COLUMN).alias("input_uri"),
        pl.col(OFFSET_COLUMN).alias("input_offset"),
    ]
    after = [pl.col("ingestion_job_id", "source_id", "input_uri", "input_offset")]
    own = [c for c in frame.columns if not c.startswith("_qv_")]
    if table == "portfolio_data_lake":
        if "portfolio_id" not in frame.columns:
            raise InvalidInputError("portfolio_data_lake rows need a portfolio_id column")
        keep, rejected = _misplaced(
            frame,
            keep,
            ~pl.col("portfolio_id").cast(pl.String).str.contains(_SAFE),
            "portfolio_id missing, or not 1-128 of A-Z a-z 0-9 _ . : -",
        )
        payload = [c for c in own if c not in ("portfolio_id", "data_type")]
        kind = pl.col("data_type").cast(pl.String) if "data_type" in own else pl.lit(data_type)
        flat = frame.lazy().select(
            pl.lit(ingestion_date).alias("ingestion_date"),
            pl.col("portfolio_id").cast(pl.String),
            kind.alias("data_type"),
            *(pl.col(c).alias(_PAYLOAD + c) for c in payload),
            *lineage,
            pl.lit(quality_score).alias("quality_score"),
            keep.alias(KEEP_COLUMN),
        )
        columns = [
            pl.col("data_type"),
            _document(payload).alias("data_payload"),
            *after,
            pl.col("quality_score"),
        ]
        return LakeRows(flat, columns), rejected
    if table == "execution_data_lake":
        when = pl.col("execution_date") if "execution_date" in own else None
        if when is None and "execution_time" in own:
            stamp = pl.col("execution_time")
            if frame.schema["execution_time"] == pl.String():
                stamp = stamp.str.to_datetime(strict=False)
            when = stamp.dt.date()
        if when is None or "trade_id" not in own:
            raise InvalidInputError(
                "execution_data_lake rows need trade_id and execution_date (or execution_time)"
            )
        if "execution_date" in own and frame.schema["execution_date"] == pl.String():
            when = pl.col("execution_date").str.to_date(strict=False)
        when = when.cast(pl.Date)
        keep, rejected = _misplaced(
            frame,
            keep,
            pl.col("trade_id").is_null() | when.is_null(),
            "trade_id or execution_date missing",
        )
        order = [c for c in own if c.startswith("order_")]
        settlement = [c for c in own if c.startswith("settlement_")]
        rest = [
            c
            for c in own
            if c not in order and c not in settlement and c not in ("trade_id", "execution_date")
        ]
        flat = frame.lazy().select(
            when.alias("execution_date"),
            pl.col("trade_id").cast(pl.String),
            *(pl.col(c).alias(_PAYLOAD + c) for c in (*order, *rest, *settlement)),
            *lineage,
            keep.alias(KEEP_COLUMN),
        )
        columns = [
            pl.col("trade_id"),
            _document(order).alias("order_data"),
            _document(rest).alias("execution_data"),
            _document(settlement).alias("settlement_data"),
            *after,
        ]
        return LakeRows(flat, columns), rejected
    flat = frame.lazy().select(
        pl.lit(ingestion_date).alias("ingestion_date"),
        *(pl.col(c) for c in own if c != "ingestion_date"),
        *lineage,
        keep.alias(KEEP_COLUMN),
    )
    return LakeRows(flat), pl.DataFrame(schema=REJECTED_SCHEMA)
