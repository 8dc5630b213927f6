"""The Airflow DAG factory: one DAG per enabled scheduled source, and `dag.test()` of one
runs the source's job through the platform (job, lake rows, lineage, dead letters).

Airflow pins its own dependencies, so it lives in `.venv-airflow` (built by `.ci/run`), not
in the dev venv: the Airflow half runs there in a subprocess against a store made here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from conftest import services_required
from quantivista.airflow import dag_id, run_source
from quantivista.clock import TestClock
from quantivista.config import Settings
from quantivista.model.workflow import DataSource, JobStatus, QualityCheck, TransformationRule
from quantivista.reporting.simulate import simulate_workflows
from quantivista.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PYTHON = ROOT / ".venv-airflow" / "bin" / "python"
T0 = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)

SCHEDULED = {  # (tenant, source) -> cron, of the enabled BATCH_SCHEDULED sources
    ("acme", "executions"): "*/15 * * * *",
    ("acme", "positions"): "0 6 * * 1-5",
    ("beta", "risk"): "30 * * * *",
}


def _store(data: Path, files: Path) -> Settings:
    """Simulated workflow sources: three scheduled, one disabled, one on demand."""
    simulate_workflows(files, seed=5, rows=300, error_rate=0.05)
    settings = Settings(data_dir=data)
    with Runtime(settings, clock=TestClock(T0)) as rt:
        w = rt.workflows
        w.save_rule("acme", TransformationRule(
            rule_id="utc", rule_type="timezone", source_field="execution_time",
            transformation_logic="America/New_York"))  # fmt: skip
        checks = [QualityCheck(check_id="id", check_type="not_null", field="trade_id")]
        w.register_source("acme", DataSource(
            source_id="executions", source_type="TRADE_EXECUTION",
            ingestion_mode="BATCH_SCHEDULED", data_format="CSV",
            location=str(files / "executions.csv"), target_table="execution_data_lake",
            schedule=SCHEDULED["acme", "executions"], transformation_rules=["utc"],
            quality_checks=checks))  # fmt: skip
        for tenant, source_id, table, fmt in (
            ("acme", "positions", "portfolio_data_lake", "PARQUET"),
            ("acme", "old-positions", "portfolio_data_lake", "AVRO"),
            ("beta", "risk", "risk_metrics", "JSON"),
        ):
            ext = {"PARQUET": "parquet", "AVRO": "avro", "JSON": "ndjson"}[fmt]
            dataset = "risk" if source_id == "risk" else "positions"
            w.register_source(tenant, DataSource(
                source_id=source_id, source_type="PORTFOLIO_MANAGEMENT",
                ingestion_mode="BATCH_SCHEDULED", data_format=fmt,
                location=str(files / f"{dataset}.{ext}"), target_table=table,
                schedule=SCHEDULED.get((tenant, source_id), "0 0 * * *")))  # fmt: skip
        w.set_enabled("acme", "old-positions", False)
        w.register_source("acme", DataSource(
            source_id="news", source_type="MARKET_INTELLIGENCE", ingestion_mode="ON_DEMAND",
            data_format="JSON", location=str(files / "news.ndjson"),
            target_table="market_intelligence"))  # fmt: skip
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _store(tmp_path / "data", tmp_path / "files")


def test_dag_ids_are_what_airflow_accepts() -> None:
    assert dag_id("acme", "executions") == "qv_acme_executions"
    assert dag_id("a b", "s/1:x", prefix="p") == "p_a_b_s_1_x"


def test_the_task_body_runs_the_source_like_qv_sources_sync(settings: Settings) -> None:
    summary = run_source(settings, "acme", "executions")
    with Runtime(settings, create=False) as rt:
        job = rt.workflows.job("acme", summary["job_id"])
        assert summary == {"job_id": job.job_id, "status": job.status.value,
                           "records_processed": job.records_processed,
                           "records_failed": job.records_failed}  # fmt: skip
        assert job.records_processed > 0
        rows = rt.workflows.lake_rows("acme", "execution_data_lake")
        assert rows.filter(pl.col("ingestion_job_id") == job.job_id).height == (
            job.records_processed
        )
        # the scheduled-source listing the factory builds its DAGs from
        found = {(s.tenant_id, s.source_id): s.schedule for s in rt.workflows.scheduled_sources()}
        assert found == SCHEDULED
        assert {s.source_id for s in rt.workflows.scheduled_sources("beta")} == {"risk"}


def test_a_failed_job_fails_the_task_and_is_recorded(settings: Settings, tmp_path: Path) -> None:
    not_parquet = tmp_path / "files" / "executions.csv"
    with Runtime(settings, create=False) as rt:
        rt.workflows.update_source("acme", "positions", {"location": str(not_parquet)})
    with pytest.raises(RuntimeError, match="failed"):
        run_source(settings, "acme", "positions")
    with Runtime(settings, create=False) as rt:
        assert [j.status for j in rt.workflows.jobs("acme", "positions")] == [JobStatus.FAILED]


# the Airflow half, run in .venv-airflow: build the DAGs, check them, dag.test() one. The
# dags folder holds the two-line file of the README (dag.test() syncs the folder to Airflow's
# database first); both read the store from QV_DATA_DIR.
DAGS_FILE = """from quantivista.airflow import dags
globals().update((dag.dag_id, dag) for dag in dags())
"""
_IN_AIRFLOW = """
import json
from quantivista.airflow import dags

built = dags()
found = {d.dag_id: {"schedule": d.schedule, "timetable": type(d.timetable).__name__,
                    "catchup": d.catchup, "max_active_runs": d.max_active_runs,
                    "tasks": [t.task_id for t in d.tasks], "tags": sorted(d.tags)}
         for d in built}
run = next(d for d in built if d.dag_id == "qv_acme_executions").test()
print(json.dumps({"dags": found, "state": str(run.state)}))
"""


@pytest.fixture
def airflow_python() -> Iterator[Path]:
    if not AIRFLOW_PYTHON.exists():
        reason = f"{AIRFLOW_PYTHON.relative_to(ROOT)} is missing (.ci/run builds it)"
        if services_required():
            pytest.fail(f"{reason}; QV_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
        pytest.skip(reason)
    yield AIRFLOW_PYTHON


def test_dag_test_of_a_factory_dag_ingests_the_source(
    airflow_python: Path, settings: Settings, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QV_", "AIRFLOW"))}
    home = tmp_path / "airflow-home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "quantivista_dags.py").write_text(DAGS_FILE)
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "QV_DATA_DIR": str(settings.data_dir)}  # fmt: skip
    airflow = airflow_python.parent / "airflow"
    migrate = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    done = subprocess.run([str(airflow_python), "-c", _IN_AIRFLOW],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert set(result["dags"]) == {dag_id(t, s) for t, s in SCHEDULED}  # enabled + scheduled
    for (tenant, source), cron in SCHEDULED.items():
        dag = result["dags"][dag_id(tenant, source)]
        assert dag["schedule"] == cron
        assert dag["catchup"] is False
        assert dag["max_active_runs"] == 1
        assert dag["tasks"] == ["ingest"]
        assert f"tenant:{tenant}" in dag["tags"]
    assert result["state"].lower().endswith("success")

    with Runtime(settings, create=False) as rt:
        [job] = rt.workflows.jobs("acme", "executions")
        assert job.status in (JobStatus.SUCCEEDED, JobStatus.PARTIAL)
        assert job.records_processed > 0
        rows = rt.workflows.lake_rows("acme", "execution_data_lake")
        assert rows.filter(pl.col("ingestion_job_id") == job.job_id).height == (
            job.records_processed
        )
        assert rt.workflows.lineage("acme", job.job_id)["inputs"][0]["sha256"]
        held = rt.workflows.dead_letters("acme", job_id=job.job_id)
        assert held.height == job.records_failed
        assert rt.workflows.jobs("acme", "positions") == []  # only the tested DAG ran
        assert rt.workflows.jobs("beta") == []
