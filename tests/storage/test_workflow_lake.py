"""The reporting lake's writer: partitions, rows left out by the keep flag, file columns."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

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
