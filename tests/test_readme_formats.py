"""The README names the lake's file formats as they are: Arrow IPC hot files (intraday
months with lz4 buffers), a Parquet cold tier; not the "Parquet lake" of earlier sessions."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_does_not_call_the_lake_parquet_only() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())  # lines joined
    for stale in (r"Parquet/DuckDB lake", r"\bParquet lake\b", r"bucketed Parquet files"):
        assert not re.search(stale, text), stale
    assert "storage.intraday_format" in text and "lz4" in text
    assert "Arrow IPC hot files, Parquet cold tier" in text
