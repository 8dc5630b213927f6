"""The reporting lake's writer: partitions, rows left out by the keep flag, file columns."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from quantivista.storage.lake.workflow_lake import WorkflowLake


def test_a_write_splits_partitions_leaves_out_unkept_rows_and_builds_file_columns(
    tmp_path: Path,
) -> None:
    lake = WorkflowLake(tmp_path)
    d1, d2 = date(2026, 12, 1), date(2026, 12, 2)
    flat = pl.DataFrame(
        {
            "execution_date": [d1, d2, d1, d2, d1],
            "trade_id": ["a", "b", "c", "d", "e"],
            "px": [1.0, 2.0, 3.0, 4.0, 5.0],
            "keep": [True, True, False, True, True],
        }
    )
    written = lake.write(
        "execution_data_lake", flat.lazy(), tenant="t", job_id="j1",
        columns=[pl.col("trade_id"), pl.struct("px").alias("execution_data")], keep="keep",
    )  # fmt: skip
    assert sorted(written) == [
        f"execution_data_lake/tenant_id=t/execution_date={d}/part-j1.parquet" for d in (d1, d2)
    ]
    back = lake.read("execution_data_lake", "t").sort("trade_id")
    assert back["trade_id"].to_list() == ["a", "b", "d", "e"]  # c is left out
    assert back["execution_data"].struct.field("px").to_list() == [1.0, 2.0, 4.0, 5.0]
    assert back["execution_date"].to_list() == [d1, d2, d2, d1]
    assert set(back.columns) == {"tenant_id", "execution_date", "trade_id", "execution_data"}
    # no keep column, no file columns: every row, every column but the partition keys
    lake.write("execution_data_lake", flat.drop("keep"), tenant="u", job_id="j2")
    assert lake.read("execution_data_lake", "u").height == 5
    assert "px" in lake.read("execution_data_lake", "u").columns


def test_a_write_whose_rows_are_all_left_out_writes_nothing(tmp_path: Path) -> None:
    lake = WorkflowLake(tmp_path)
    flat = pl.DataFrame({"ingestion_date": [date(2026, 12, 1)] * 2, "v": [1, 2], "k": [False] * 2})
    assert lake.write("risk_metrics", flat, tenant="t", job_id="j", keep="k") == []
    assert lake.files("risk_metrics") == []


def test_a_single_partition_whose_rows_are_all_kept_is_written_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job without rejects into a table of one partition (a plain job into risk_metrics):
    the rows go to the encoder as they are. Splitting by the keep flag too copied all of
    them (a group-by and a gather of every column), which halved the plain job's rate."""
    n = 1_000
    # as `reporting.lake_shape` gives them: the job's date a literal, the flag computed
    flat = pl.DataFrame({"value": pl.int_range(n, eager=True)}).with_columns(
        ingestion_date=pl.lit(date(2026, 12, 4)), k=pl.col("value") >= 0
    )
    seen: list[pl.DataFrame] = []
    write_parquet = pl.DataFrame.write_parquet

    def keep_seen(self: pl.DataFrame, *args: Any, **kwargs: Any) -> None:
        seen.append(self)
        write_parquet(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", keep_seen)
    WorkflowLake(tmp_path).write("risk_metrics", flat, tenant="t", job_id="j", keep="k")
    (part,) = seen
    assert part.columns == ["value"]
    # the same buffer: no row was copied on the way to the file
    assert _address(part["value"]) == _address(flat["value"])
    # one row left out: it is split off (and every other row written)
    seen.clear()
    flat = flat.with_columns(k=pl.int_range(n) != 7)
    WorkflowLake(tmp_path).write("risk_metrics", flat, tenant="u", job_id="j", keep="k")
    assert seen[0]["value"].to_list() == [v for v in range(n) if v != 7]


def _address(column: pl.Series) -> int:
    """Return where the values of a one-chunk integer column lie in memory."""
    buffer = column.to_arrow().buffers()[1]
    assert buffer is not None
    return int(buffer.address)
