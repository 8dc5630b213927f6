"""What every quarantine store (the lake's, PostgreSQL's) does the same way with the rows:
which rejected rows are new, the frame a batch is stored as, and how releases hide rows.

    rejected = not_held(rejected, held)            # drop the bars held already
    frame = stored_frame(rejected, job_id, at)     # QUARANTINE_POLARS_SCHEMA
    listing = with_releases(rows, releases, include_released=False)
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from quantivista.model.schema import (
    QUARANTINE_POLARS_SCHEMA,
    QUARANTINE_ROW_ID,
    QUARANTINE_SAME,
)

__all__ = ["not_held", "stored_frame", "with_releases"]


def not_held(rejected: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """Return the rows of `rejected` not equal to a `held` row in `QUARANTINE_SAME` (the
    same bad bar, rejected again by a re-ingest)."""
    if held.is_empty():
        return rejected
    return rejected.join(
        held.select(QUARANTINE_SAME).unique(),
        on=list(QUARANTINE_SAME),
        how="anti",
        nulls_equal=True,
    )


def stored_frame(rejected: pl.DataFrame, job_id: str, at: datetime) -> pl.DataFrame:
    """Return rejected rows as they are stored: the job filled in, stamped `at`."""
    return (
        rejected.with_columns(
            job_id=pl.col("job_id").fill_null(job_id),
            quarantined_at=pl.lit(at, QUARANTINE_POLARS_SCHEMA["quarantined_at"]),
        )
        .select(QUARANTINE_POLARS_SCHEMA.names())
        .cast(QUARANTINE_POLARS_SCHEMA)
    )


def with_releases(
    rows: pl.DataFrame, released: pl.DataFrame, *, include_released: bool
) -> pl.DataFrame:
    """Return the held `rows` (released ones left out), or with `include_released` all of
    them with `released_at` and `release_job_id` (null while a row is held)."""
    on = list(QUARANTINE_ROW_ID)
    if include_released:
        extra = released.select(*QUARANTINE_ROW_ID, "released_at", "release_job_id")
        return rows.join(extra, on=on, how="left", nulls_equal=True)
    return rows.join(released, on=on, how="anti", nulls_equal=True)
