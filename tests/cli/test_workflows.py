"""`qv simulate-workflows`, `qv rules`, `qv sources`, `qv ingestion-jobs`, `qv lineage`,
`qv dead-letters` on a temporary data directory."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from quantivista.cli import app

runner = CliRunner()


def qv(data: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["--data-dir", str(data), *args])
    assert result.exit_code == code, result.output
    return result.output


def test_simulate_add_sync_and_inspect_a_source(tmp_path: Path) -> None:
    data, files = tmp_path / "qv", tmp_path / "wf"
    listed = qv(data, "simulate-workflows", str(files), "--rows", "300", "--seed", "3",
                "--error-rate", "0.1")  # fmt: skip
    assert len(listed.split()) == 30  # 6 datasets x 5 formats
    again = tmp_path / "wf2"
    qv(
        data,
        "simulate-workflows",
        str(again),
        "--rows",
        "300",
        "--seed",
        "3",
        "--error-rate",
        "0.1",
    )
    for name in ("executions.csv", "news.ndjson", "positions.pb"):  # seeded: the same bytes
        assert (again / name).read_bytes() == (files / name).read_bytes()

    bad = qv(data, "rules", "add", "px", "--type", "derive", "--target-field", "x",
             "--logic", "price ** (", code=2)  # fmt: skip
    assert "not a Polars SQL expression" in bad
    assert "version 1" in qv(data, "rules", "add", "px", "--type", "cast",
                             "--source-field", "execution_price", "--logic", "float64",
                             "--tenant", "acme")  # fmt: skip
    bad_checks = tmp_path / "bad.json"
    bad_checks.write_text(json.dumps([{"check_id": "x", "check_type": "sometimes"}]))
    refused = qv(data, "sources", "add", "s", "--location", "x", "--type", "TRADE_EXECUTION",
                 "--format", "CSV", "--checks", str(bad_checks), code=2)  # fmt: skip
    assert "check_type" in refused
    checks = tmp_path / "checks.json"
    checks.write_text(
        json.dumps([{"check_id": "id", "check_type": "not_null", "field": "trade_id"}])
    )
    qv(data, "sources", "add", "execs", "--location", str(files / "executions.csv"),
       "--type", "TRADE_EXECUTION", "--format", "CSV", "--table", "execution_data_lake",
       "--rule", "px", "--checks", str(checks), "--tenant", "acme")  # fmt: skip
    listing = pl.read_csv(io.StringIO(qv(data, "sources", "list", "--tenant", "acme", "-f", "csv")))
    assert listing["source_id"].to_list() == ["execs"]
    synced = qv(data, "sources", "sync", "--tenant", "acme")
    assert "partial" in synced
    jobs = json.loads(qv(data, "ingestion-jobs", "--tenant", "acme", "-f", "json"))
    assert len(jobs) == 1 and jobs[0]["records_processed"] + jobs[0]["records_failed"] == 300
    job_id = jobs[0]["job_id"]
    assert re.fullmatch(r"wj-[0-9a-f]{16}", job_id)
    shown = qv(data, "lineage", job_id, "--tenant", "acme")
    digest = hashlib.sha256((files / "executions.csv").read_bytes()).hexdigest()
    assert digest[:20] in shown.replace("\n", "") and "px v1" in shown
    held = json.loads(qv(data, "dead-letters", "--tenant", "acme", "--limit", "999", "-f", "json"))
    assert len(held) == jobs[0]["records_failed"]
    assert {h["reason"] for h in held} >= {"execution_price: value cannot be cast"}
    assert qv(data, "ingestion-jobs", "--tenant", "other", "-f", "json").strip() == "[]"
    qv(data, "lineage", job_id, "--tenant", "other", code=2)  # another tenant's job: unknown
    qv(data, "sources", "disable", "execs", "--tenant", "acme")
    assert "no enabled sources" in qv(data, "sources", "sync", "--tenant", "acme", code=1)
