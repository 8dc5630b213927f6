"""`qv sql`: DuckDB over the lake's bars, actions and quarantine."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import MakeBars
from quantivista.cli import app
from quantivista.errors import InvalidInputError
from quantivista.platform import Platform
from quantivista.storage.lake.sql import sql_query


def test_sql_over_bars_actions_and_quarantine(tmp_path: Path, make_bars: MakeBars) -> None:
    with Platform.open(tmp_path) as p:
        bars = make_bars(["AAA", "BBB"], 5).drop("ingested_at", "job_id", "provider")
        bad = bars.head(1).with_columns(symbol=pl.lit("CCC"), high=pl.col("low") - 1.0)
        p.write_bars(pl.concat([bars, bad]), source="vendor")
        p.write_actions(
            pl.DataFrame(
                {
                    "symbol": ["AAA"],
                    "action_type": ["split"],
                    "ex_date": ["2024-01-04"],
                    "ratio": [2.0],
                }
            )
        )
    counts = sql_query(tmp_path, "SELECT symbol, count(*) AS n FROM bars GROUP BY 1 ORDER BY 1")
    assert counts.rows() == [("AAA", 5), ("BBB", 5)]
    assert sql_query(tmp_path, "SELECT ratio FROM actions").item() == 2.0
    assert sql_query(tmp_path, "SELECT symbol FROM quarantine").item() == "CCC"
    assert sql_query(tmp_path / "empty", "SELECT count(*) FROM bars").item() == 0
    with pytest.raises(InvalidInputError):
        sql_query(tmp_path, "SELECT nope FROM bars")


def test_qv_sql_prints_a_table(tmp_path: Path, make_bars: MakeBars) -> None:
    with Platform.open(tmp_path) as p:
        p.write_bars(make_bars(["AAA"], 3).drop("ingested_at", "job_id"), source="v")
    runner = CliRunner()
    query = "SELECT symbol, round(max(high), 2) AS top FROM bars GROUP BY 1"
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "sql", query])
    assert result.exit_code == 0, result.output
    assert "AAA" in result.output and "top" in result.output and "1 rows" in result.output
    failed = runner.invoke(app, ["--data-dir", str(tmp_path), "sql", "SELECT * FROM nowhere"])
    assert failed.exit_code == 2
