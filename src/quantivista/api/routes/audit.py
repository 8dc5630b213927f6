"""The audit trail over HTTP (admin scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from quantivista.api.deps import Caller, State, require
from quantivista.api.errors import COMMON_RESPONSES
from quantivista.model.auth import Scope

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", responses=COMMON_RESPONSES)
Admin = Annotated[Caller, Depends(require(Scope.ADMIN))]


@router.get("/audit", tags=["operations"])
def audit(
    state: State,
    who: Admin,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    tenant: str | None = None,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Return who did what: the latest `limit` audit records matching, oldest first."""
    del who
    frame = state.runtime.audit.query(
        since, until, actor=actor, tenant=tenant, action=action, limit=limit
    )
    return frame.with_columns(frame["at"].dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ")).to_dicts()
