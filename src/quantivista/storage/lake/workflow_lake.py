"""The reporting data lake: hive-partitioned Parquet per table, tenant and partition.

    reporting/<table>/tenant_id=<t>/<key>=<value>[/<key>=<value>]/part-<job_id>.parquet

One file per (job, partition): writing a job again replaces its files (idempotent), and
readers (Polars, DuckDB, `qv sql`) see each partition key as a column. Files appear by an
atomic rename, so a reader never sees half a file. Every row carries its lineage:
`ingestion_job_id`, `source_id`, `input_uri` and `input_offset` (the row's place in its
input file or stream); the job's catalog entries add the input's sha256 or cursor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

import polars as pl

from quantivista.errors import InvalidInputError, NotFoundError

__all__ = ["LAKE_PARTITIONS", "WorkflowLake"]

# each table's partition columns (after tenant_id)
LAKE_PARTITIONS: Mapping[str, tuple[str, ...]] = {
    "portfolio_data_lake": ("ingestion_date", "portfolio_id"),
    "execution_data_lake": ("execution_date",),
    "risk_metrics": ("ingestion_date",),
    "performance_metrics": ("ingestion_date",),
    "market_intelligence": ("ingestion_date",),
    "instrument_analytics": ("ingestion_date",),
}

_HIVE_TYPES: Mapping[str, pl.DataType] = {
    "ingestion_date": pl.Date(),
    "execution_date": pl.Date(),
    "portfolio_id": pl.String(),
}
# rows per row group: a partition of a large job is a few big groups, not many small ones
_ROW_GROUP = 1 << 20
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _value(value: Any) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if not _SAFE.match(text):
        raise InvalidInputError(
            "a partition value must be 1-128 of A-Z a-z 0-9 _ . : -", value=text
        )
    return text


class WorkflowLake:
    """The reporting tables under `<root>/reporting`."""

    def __init__(
        self,
        root: Path,
        *,
        compression: Literal["zstd", "lz4", "snappy"] = "zstd",
        compression_level: int | None = 1,
    ) -> None:
        self.root = Path(root) / "reporting"
        self.compression = compression
        self.compression_level = compression_level if compression == "zstd" else None

    def table_dir(self, table: str) -> Path:
        """Return a table's folder; `InvalidInputError` for a table the lake does not have."""
        if table not in LAKE_PARTITIONS:
            raise InvalidInputError(
                f"unknown lake table {table!r}", known=", ".join(sorted(LAKE_PARTITIONS))
            )
        return self.root / table

    def write(
        self,
        table: str,
        frame: pl.DataFrame | pl.LazyFrame,
        *,
        tenant: str,
        job_id: str,
        columns: Sequence[pl.Expr] | None = None,
        keep: str | None = None,
    ) -> list[str]:
        """Write a job's rows of one table; return the files written (relative paths).

        The frame (or a plan of it) holds the partition columns; rows of other values stay
        out of it (the caller rejects them with a reason beforehand: see
        `reporting.lake_shape`). `columns`: each file's columns, computed from its
        partition's rows (default: every column but the partition keys); `keep`: a boolean
        column, false on rows to leave out (split off with the partitions: the rows are
        copied once, not filtered first and copied again).
        """
        base = self.table_dir(table) / f"tenant_id={_value(tenant)}"
        keys = list(LAKE_PARTITIONS[table])
        frame = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        if frame.is_empty():
            return []
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise InvalidInputError(f"{table} rows need {', '.join(missing)}")
        name = f"part-{_value(job_id)}.parquet"
        # rows left out are split off by the keep flag; when every row is kept, the keys
        # alone split them: a key that is one literal value (a job's ingestion date) splits
        # nothing and polars hands the frame back uncopied, while the computed flag as a
        # second key gathers every row (a plain job into risk_metrics took twice as long)
        leave_out = keep is not None and frame.get_column(keep).all(ignore_nulls=False) is not True
        split = [*keys, keep] if leave_out and keep is not None else keys
        parts = {
            values[: len(keys)]: part
            for values, part in frame.partition_by(
                split, as_dict=True, maintain_order=False
            ).items()
            if not leave_out or values[-1]
        }
        folders = {
            values: base.joinpath(*(f"{k}={_value(v)}" for k, v in zip(keys, values, strict=True)))
            for values in parts
        }
        dropped = [*keys, keep] if keep is not None else keys

        def put(values: tuple[Any, ...]) -> str:
            folder = folders[values]
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".tmp-{uuid4().hex}"
            part = parts[values]
            rows = part.select(columns) if columns is not None else part.drop(dropped)
            rows.write_parquet(
                tmp,
                compression=self.compression,
                compression_level=self.compression_level,
                row_group_size=_ROW_GROUP,
            )
            os.replace(tmp, folder / name)
            return str((folder / name).relative_to(self.root))

        # a loop over partitions, not rows; Polars encodes without the GIL, so partitions
        # are written side by side
        if len(folders) <= 1:
            return [put(values) for values in folders]
        with ThreadPoolExecutor(max_workers=min(len(parts), os.cpu_count() or 1)) as pool:
            return list(pool.map(put, folders))

    def files(self, table: str, tenant: str | None = None) -> list[Path]:
        """Return a table's data files (of one tenant, or all)."""
        folder = self.table_dir(table)
        if tenant is not None:
            folder = folder / f"tenant_id={_value(tenant)}"
        return sorted(p for p in folder.glob("**/part-*.parquet") if not p.name.startswith("."))

    def scan(self, table: str, tenant: str | None = None) -> pl.LazyFrame:
        """Return a lazy scan of a table (of one tenant, or all) with its partition columns."""
        files = self.files(table, tenant)
        if not files:
            raise NotFoundError(f"the lake table {table} has no rows yet", tenant=tenant)
        return pl.scan_parquet(
            [str(f) for f in files],
            hive_partitioning=True,
            hive_schema={"tenant_id": pl.String()}
            | {key: _HIVE_TYPES[key] for key in LAKE_PARTITIONS[table]},
        )

    def read(self, table: str, tenant: str | None = None) -> pl.DataFrame:
        """Return a table's rows (of one tenant, or all)."""
        return self.scan(table, tenant).collect()

    def sources(self) -> dict[str, list[Path]]:
        """Return the tables that hold files, with their files (for SQL views)."""
        out = {}
        for table in LAKE_PARTITIONS:
            if (self.root / table).is_dir():
                files = self.files(table)
                if files:
                    out[table] = files
        return out
