"""Airflow DAGs for the reporting side's scheduled sources (extra `airflow`).

One DAG per enabled BATCH_SCHEDULED source: the source's cron schedule, catchup off, one
run at a time, one task that runs the source's ingestion job through the platform's
service, so the job, its lineage, dead letters and `DataIngestedEvent` are recorded exactly
as `qv sources sync` records them. A file in Airflow's dags folder:

    from quantivista.airflow import dags
    globals().update((dag.dag_id, dag) for dag in dags())

`dags()` reads `Settings()` (the `QV_` environment: `QV_DATA_DIR`, the storage engine, ...).
Airflow is imported only when the factory is called: the core library never loads it.
Use Airflow or `qv scheduler` for a source, not both (each would run it on every tick).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from quantivista.config import Settings
from quantivista.model.workflow import DataSource, JobStatus
from quantivista.runtime import Runtime
from quantivista.services.audit import Actor, acting_as

__all__ = ["dag_id", "dags", "run_source"]

# with catchup off, Airflow only runs the latest interval: any past date will do
START = datetime(2024, 1, 1, tzinfo=UTC)


def dag_id(tenant: str, source_id: str, prefix: str = "qv") -> str:
    """Return the DAG id of a tenant's source (Airflow allows letters, digits, `.-_`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{prefix}_{tenant}_{source_id}")


def run_source(settings: Settings, tenant: str, source_id: str) -> dict[str, Any]:
    """Run one source's ingestion job now and return its summary (raises if it failed)."""
    actor = Actor(f"airflow:{dag_id(tenant, source_id)}", tenant)
    with Runtime.from_settings(settings, create=False) as runtime, acting_as(actor):
        job = runtime.workflows.sync(tenant, source_id)
    if job.status is JobStatus.FAILED:  # recorded in the catalog; fail the task as well
        raise RuntimeError(f"ingestion job {job.job_id} failed: {job.error_details}")
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "records_processed": job.records_processed,
        "records_failed": job.records_failed,
    }


def _dag(settings: Settings, source: DataSource, prefix: str, retries: int) -> Any:
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    tenant, source_id = source.tenant_id, source.source_id

    def ingest() -> dict[str, Any]:
        return run_source(settings, tenant, source_id)

    with DAG(
        dag_id=dag_id(tenant, source_id, prefix),
        schedule=source.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,  # a source's runs never overlap, like the scheduler's lease
        default_args={"retries": retries},
        tags=["quantivista", f"tenant:{tenant}", source.source_type.value],
        doc_md=f"Ingests source `{source_id}` of tenant `{tenant}` ({source.data_format.value}"
        f" from `{source.location}`) into `{source.target_table}`.",
    ) as dag:
        PythonOperator(task_id="ingest", python_callable=ingest)
    return dag


def dags(
    settings: Settings | None = None,
    *,
    tenant: str | None = None,
    prefix: str = "qv",
    retries: int = 0,
) -> list[Any]:
    """Return one Airflow DAG per enabled BATCH_SCHEDULED source (of `tenant`, or all).

    `retries` defaults to 0: a failed job is already recorded with its reason, and a
    retry is a new job.
    """
    settings = settings or Settings()
    with Runtime.from_settings(settings, create=False) as runtime:
        sources = runtime.workflows.scheduled_sources(tenant)
    return [_dag(settings, source, prefix, retries) for source in sources]
