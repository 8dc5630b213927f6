"""The reporting-side Data Ingestion Service over REST: sources, rules, jobs, quality, lineage.

Every route acts for the token's tenant: another tenant's source, rule or job answers 404,
exactly like one that does not exist. Jobs run in the background (202 with the pending
job; poll `GET /ingestion/jobs/{job_id}/status`).
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from quantivista.api.deps import Caller, State, require
from quantivista.api.errors import COMMON_RESPONSES
from quantivista.model.auth import Scope
from quantivista.model.workflow import (
    DataIngestionRequest,
    DataQualityReport,
    DataSource,
    IngestionJob,
    TransformationRule,
)
from quantivista.services.workflow_ingestion import WorkflowIngestionService

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/ingestion", tags=["ingestion"], responses=COMMON_RESPONSES)

Reader = Annotated[Caller, Depends(require(Scope.READ_BARS))]
Writer = Annotated[Caller, Depends(require(Scope.WRITE_INGEST))]


def _service(state: State) -> WorkflowIngestionService:
    return state.runtime.workflows


def _start(service: WorkflowIngestionService, job: IngestionJob) -> IngestionJob:
    runner = threading.Thread(
        target=service.run_job,
        args=(job.tenant_id, job.job_id),
        name=f"qv-ingestion-{job.job_id}",
        daemon=True,
    )
    runner.start()
    return job


# -- jobs ----------------------------------------------------------------------------------------
@router.post("/jobs", status_code=202, response_model=IngestionJob)
def submit(state: State, who: Writer, request: DataIngestionRequest) -> IngestionJob:
    """Register the request's source and rules, and run it in the background."""
    service = _service(state)
    return _start(service, service.submit(who.principal.tenant, request))


@router.get("/jobs", response_model=list[IngestionJob])
def jobs(
    state: State, who: Reader, source_id: str | None = None, limit: int = 50
) -> list[IngestionJob]:
    """Return the tenant's jobs, newest first."""
    return _service(state).jobs(who.principal.tenant, source_id, max(1, min(limit, 1000)))


@router.get("/jobs/{job_id}/status", response_model=IngestionJob)
def job_status(state: State, who: Reader, job_id: str) -> IngestionJob:
    """Return a job: its status and counts."""
    return _service(state).job(who.principal.tenant, job_id)


@router.get("/jobs/{job_id}/quality", response_model=DataQualityReport)
def job_quality(state: State, who: Reader, job_id: str) -> DataQualityReport:
    """Return a finished job's quality report with per-column profiling."""
    return _service(state).report(who.principal.tenant, job_id)


@router.get("/jobs/{job_id}/lineage")
def job_lineage(state: State, who: Reader, job_id: str) -> dict[str, Any]:
    """Return what a job read (files with sha256, cursors, pages) and where it wrote."""
    return _service(state).lineage(who.principal.tenant, job_id)


@router.get("/jobs/{job_id}/dead-letters")
def job_dead_letters(state: State, who: Reader, job_id: str) -> Response:
    """Return the records a job held back, as read, with their reasons."""
    service = _service(state)
    service.job(who.principal.tenant, job_id)
    rows = service.dead_letters(who.principal.tenant, job_id=job_id)
    return Response(rows.write_json(), media_type="application/json")


# -- sources -------------------------------------------------------------------------------------
@router.get("/sources", response_model=list[DataSource])
def sources(state: State, who: Reader) -> list[DataSource]:
    """Return the tenant's sources."""
    return _service(state).sources(who.principal.tenant)


@router.post("/sources", status_code=201, response_model=DataSource)
def create_source(state: State, who: Writer, source: DataSource) -> DataSource:
    """Create (or replace) a source; its rules and checks are validated (422 with the reason)."""
    return _service(state).register_source(who.principal.tenant, source)


@router.get("/sources/{source_id}", response_model=DataSource)
def source(state: State, who: Reader, source_id: str) -> DataSource:
    """Return one source."""
    return _service(state).source(who.principal.tenant, source_id)


@router.put("/sources/{source_id}", response_model=DataSource)
def update_source(state: State, who: Writer, source_id: str, changes: dict[str, Any]) -> DataSource:
    """Change some fields of a source (validated like a new one)."""
    changes.pop("tenant_id", None)
    return _service(state).update_source(who.principal.tenant, source_id, changes)


@router.post("/sources/{source_id}/disable", response_model=DataSource)
def disable_source(state: State, who: Writer, source_id: str) -> DataSource:
    """Disable a source: it is no longer scheduled or synced."""
    return _service(state).set_enabled(who.principal.tenant, source_id, False)


@router.post("/sources/{source_id}/enable", response_model=DataSource)
def enable_source(state: State, who: Writer, source_id: str) -> DataSource:
    """Enable a source again."""
    return _service(state).set_enabled(who.principal.tenant, source_id, True)


@router.post("/sources/{source_id}/sync", status_code=202, response_model=IngestionJob)
def sync(state: State, who: Writer, source_id: str) -> IngestionJob:
    """Run a source now, in the background; return its pending job."""
    service = _service(state)
    return _start(service, service.new_job(who.principal.tenant, source_id))


@router.post("/sources/{source_id}/replay", response_model=IngestionJob)
def replay(state: State, who: Writer, source_id: str, job_id: str | None = None) -> IngestionJob:
    """Send a source's held dead letters (of one job, or all) through it again."""
    return _service(state).replay(who.principal.tenant, source_id, job_id)


# -- rules ---------------------------------------------------------------------------------------
class RuleRequest(TransformationRule):
    """A rule, and optionally the input columns to check it against (name -> type)."""

    fields: dict[str, str] | None = None


@router.get("/rules", response_model=list[TransformationRule])
def rules(state: State, who: Reader) -> list[TransformationRule]:
    """Return the latest version of each rule."""
    return _service(state).rules(who.principal.tenant)


@router.post("/rules", status_code=201, response_model=TransformationRule)
def create_rule(state: State, who: Writer, rule: RuleRequest) -> TransformationRule:
    """Store a rule (a change of an existing id becomes its next version); 422 if invalid."""
    plain = TransformationRule.model_validate(rule.model_dump(exclude={"fields"}))
    return _service(state).save_rule(who.principal.tenant, plain, rule.fields)


@router.get("/rules/{rule_id}", response_model=TransformationRule)
def rule(state: State, who: Reader, rule_id: str, version: int | None = None) -> TransformationRule:
    """Return a rule's latest (or given) version."""
    return _service(state).rule(who.principal.tenant, rule_id, version)


@router.get("/rules/{rule_id}/versions", response_model=list[TransformationRule])
def rule_versions(state: State, who: Reader, rule_id: str) -> list[TransformationRule]:
    """Return every version of a rule."""
    return _service(state).rule_history(who.principal.tenant, rule_id)


@router.put("/rules/{rule_id}", response_model=TransformationRule)
def update_rule(state: State, who: Writer, rule_id: str, rule: RuleRequest) -> TransformationRule:
    """Store a new version of a rule."""
    plain = TransformationRule.model_validate(
        rule.model_dump(exclude={"fields"}) | {"rule_id": rule_id}
    )
    return _service(state).save_rule(who.principal.tenant, plain, rule.fields)


@router.delete("/rules/{rule_id}", response_model=TransformationRule)
def delete_rule(state: State, who: Writer, rule_id: str) -> TransformationRule:
    """Disable a rule (a new, disabled version; the history stays)."""
    return _service(state).disable_rule(who.principal.tenant, rule_id)
