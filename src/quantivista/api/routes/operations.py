"""Tokens, jobs, quality, quarantine, providers and store status."""

from __future__ import annotations

import json
import threading
from datetime import date
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Depends, Form, Query, Response
from pydantic import BaseModel, Field

from quantivista.api.deps import Caller, State, require
from quantivista.api.errors import COMMON_RESPONSES
from quantivista.errors import NotFoundError
from quantivista.model.auth import Scope
from quantivista.model.jobs import DataQualityReport, IngestionJob
from quantivista.services.encode import BodyFormat, encode

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", responses=COMMON_RESPONSES)

ReadBars = Annotated[Caller, Depends(require(Scope.READ_BARS))]
Ingest = Annotated[Caller, Depends(require(Scope.WRITE_INGEST))]
Admin = Annotated[Caller, Depends(require(Scope.ADMIN))]


class TokenResponse(BaseModel):
    """An OAuth 2.0 access token."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


@router.post("/auth/token", tags=["auth"], response_model=TokenResponse)
def token(
    state: State,
    grant_type: Annotated[str, Form(pattern="^client_credentials$")],
    client_id: Annotated[str, Form(min_length=1)],
    client_secret: Annotated[str, Form(min_length=1)],
    scope: Annotated[str | None, Form()] = None,
) -> TokenResponse:
    """Exchange client credentials for a bearer token (OAuth 2.0 client-credentials grant)."""
    issued = state.auth.token(client_id, client_secret, scope)
    return TokenResponse(
        access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope
    )


class IngestRequest(BaseModel):
    """An ingestion job to run: symbols over a range, from providers in failover order."""

    symbols: list[str] = Field(min_length=1, max_length=10_000)
    start: date
    end: date
    timeframe: str = Field(default="1d", pattern=r"^\d+(m|h|d|w|mo)$")
    providers: list[str] | None = None


def _visible(who: Caller, job: IngestionJob) -> bool:
    """A tenant sees its own jobs; the platform's own jobs are visible to admins only."""
    return job.tenant == who.principal.tenant or (
        job.tenant is None and who.principal.can(Scope.ADMIN)
    )


def _own_job(state: State, who: Caller, job_id: str) -> IngestionJob:
    job = state.runtime.ingestion.job(job_id)
    if not _visible(who, job):
        raise NotFoundError("unknown job", job_id=job_id)  # not "forbidden": no existence leak
    return job


@router.post("/jobs", tags=["jobs"], status_code=202, response_model=IngestionJob)
def submit(state: State, who: Ingest, request: IngestRequest) -> IngestionJob:
    """Submit an ingestion job; it runs in the background (poll `GET /jobs/{id}`).

    With `workers.enabled` it is queued for `qv worker`s (its `queue` says which queue);
    otherwise this API process runs it.
    """
    service = state.runtime.ingestion
    args = (request.symbols, request.start, request.end, request.timeframe, request.providers)
    if state.runtime.settings.workers.enabled:
        return service.enqueue(*args, tenant=who.principal.tenant)
    job = service.submit(*args, tenant=who.principal.tenant)
    runner = threading.Thread(
        target=service.run, args=(job.job_id,), name=f"qv-job-{job.job_id}", daemon=True
    )
    runner.start()
    return job


@router.get("/jobs", tags=["jobs"], response_model=list[IngestionJob])
def jobs(
    state: State,
    who: ReadBars,
    limit: int = 50,
    kind: Annotated[
        str,
        Query(
            pattern=r"^[a-z_]+$",
            description="Jobs of this kind: ingest (the default), export (also listed by"
            " /api/v1/exports), or all.",
        ),
    ] = "ingest",
) -> list[IngestionJob]:
    """Return the caller's tenant's recent jobs of one kind (an admin also sees the
    platform's own); ingestion jobs unless `kind` says otherwise."""
    listed = state.runtime.ingestion.jobs(max(1, min(limit, 1000)) * 5)
    return [j for j in listed if _visible(who, j) and kind in ("all", j.kind)][:limit]


@router.get("/jobs/{job_id}", tags=["jobs"], response_model=IngestionJob)
def job(state: State, who: ReadBars, job_id: str) -> IngestionJob:
    """Return one job."""
    return _own_job(state, who, job_id)


@router.get("/quality/jobs/{job_id}", tags=["quality"], response_model=DataQualityReport)
def quality_report(state: State, who: ReadBars, job_id: str) -> DataQualityReport:
    """Return the data-quality report of a job."""
    _own_job(state, who, job_id)
    return state.runtime.quality.report(job_id)


@router.get("/quarantine", tags=["quality"])
def quarantine(
    state: State, who: ReadBars, job_id: str | None = None, symbols: str | None = None,
    limit: int = 1000,
) -> Response:  # fmt: skip
    """Return held quarantine rows of the caller's tenant's jobs, with rule and reason."""
    names = [s.strip() for s in symbols.split(",")] if symbols else None
    if job_id is not None:
        _own_job(state, who, job_id)
        df = state.runtime.quality.quarantine(names, job_id)
    else:
        df = state.runtime.quality.quarantine(names)
        own = {j.job_id for j in state.runtime.ingestion.jobs(100_000) if _visible(who, j)}
        df = df.filter(df["job_id"].is_in(list(own)))
    return Response(encode(df.head(max(1, limit)), BodyFormat.json), media_type="application/json")


@router.get("/providers", tags=["operations"])
def providers(state: State, who: ReadBars) -> dict[str, Any]:
    """Return registered providers, limits, health, quotas and breakers."""
    stats, live = state.runtime.providers.stats()
    return {
        "providers": json.loads(state.runtime.providers.table().write_json()),
        "calls": stats,
        "live": live,
    }


@router.get("/status", tags=["operations"])
def status(state: State, who: ReadBars) -> dict[str, Any]:
    """Return what the store holds per timeframe, and its tiers."""
    stats = state.runtime.queries.status()
    summary = (
        stats.group_by("timeframe")
        .agg(
            symbols=pl.len(),
            rows=pl.col("rows").sum(),
            first_ts=pl.col("first_ts").min(),
            last_ts=pl.col("last_ts").max(),
            bytes=pl.col("bytes").sum(),
        )
        .sort("timeframe")
    )
    return {
        "store": state.runtime.settings.storage.backend,
        "timeframes": json.loads(summary.write_json()),
        "tiers": json.loads(state.runtime.maintenance.storage_report().write_json()),
        "quarantined": state.runtime.quality.quarantined(),
    }
