"""The audit trail: who (client, tenant, or the CLI's user) did what, append-only.

Recorded at the edges: every API request that changes something (its client and tenant
from authentication), the CLI's writing commands (the OS user), and the pipeline's events
(bars ingested, rows quarantined, actions stored) under whoever was acting in that context
(`acting_as`). The log refuses UPDATE and DELETE at the database (see storage.*.opslog).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import polars as pl

from quantivista.bus.base import EventBus
from quantivista.bus.events import ActionsIngested, BarsIngested, BarsQuarantined, Event
from quantivista.clock import Clock
from quantivista.config import Settings
from quantivista.storage.contracts import Backend

__all__ = ["ACTOR", "Actor", "AuditService", "OpsLog", "acting_as", "cli_actor", "open_opslog"]


@dataclass(frozen=True)
class Actor:
    """Who acts: an API client (with its tenant), `cli:<user>`, `scheduler`, ..."""

    name: str
    tenant: str | None = None


def _system() -> Actor:
    try:
        return Actor(f"system:{getpass.getuser()}")
    except (KeyError, OSError):  # no user name in a bare container
        return Actor("system")


def cli_actor() -> Actor:
    """Return the actor of a CLI command: `cli:<OS user>`."""
    return Actor("cli:" + _system().name.removeprefix("system:"))


ACTOR: ContextVar[Actor | None] = ContextVar("qv_actor", default=None)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Attribute what the block does to `actor`."""
    token = ACTOR.set(actor)
    try:
        yield actor
    finally:
        ACTOR.reset(token)


class OpsLog(Protocol):
    """Append-only audit records and SLA samples (storage.lake/postgres.opslog)."""

    def add_audit(
        self, at: datetime, actor: str, tenant: str | None, action: str, target: str,
        outcome: str, details: dict[str, Any],
    ) -> None: ...  # fmt: skip
    def audit(
        self, since: datetime | None = None, until: datetime | None = None, *,
        actor: str | None = None, tenant: str | None = None, action: str | None = None,
        limit: int = 1000,
    ) -> pl.DataFrame: ...  # fmt: skip
    def add_sla(
        self, at: datetime, probe: str, ok: bool, latency_s: float | None, detail: str = ""
    ) -> None: ...
    def sla(self, since: datetime, until: datetime) -> pl.DataFrame: ...
    def execute(self, sql: str) -> None: ...
    def close(self) -> None: ...


def open_opslog(settings: Settings, backend: Backend) -> OpsLog:
    """Return the operations log of the store in use."""
    if backend.kind == "postgres":
        from quantivista.storage.postgres.bars import PostgresStore
        from quantivista.storage.postgres.opslog import PgOpsLog

        assert isinstance(backend.bars, PostgresStore)
        return PgOpsLog(backend.bars.pool)
    from quantivista.storage.lake.opslog import SqliteOpsLog

    return SqliteOpsLog(settings.data_dir / "ops.sqlite", fsync=settings.storage.fsync)


class AuditService:
    """Records and queries the audit trail."""

    def __init__(self, log: OpsLog, clock: Clock) -> None:
        self.log = log
        self.clock = clock

    @classmethod
    def attach(
        cls, settings: Settings, backend: Backend, clock: Clock, bus: EventBus
    ) -> AuditService:
        """Open the store's operations log and record the pipeline's events from `bus`."""
        service = cls(open_opslog(settings, backend), clock)
        for topic in ("bars.ingested", "bars.quarantined", "actions.ingested"):
            bus.subscribe(topic, service.on_event, name="audit")
        return service

    def close(self) -> None:
        """Close the operations log."""
        self.log.close()

    def record(
        self,
        action: str,
        target: str = "",
        *,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Append one record; the actor is the one acting in this context unless given."""
        who = actor or ACTOR.get() or _system()
        self.log.add_audit(
            self.clock.now(), who.name, who.tenant, action, target, outcome, details or {}
        )

    def on_event(self, event: Event) -> None:
        """Bus subscriber: record stored bars, quarantined rows and stored actions."""
        if isinstance(event, BarsIngested):
            self.record("bars.ingest", event.job_id, details={
                "source": event.source, "timeframe": event.timeframe,
                "symbols": len(event.symbols), "rows_written": event.rows_written,
            })  # fmt: skip
        elif isinstance(event, BarsQuarantined):
            details = {"source": event.source, "rows": event.rows, "rules": event.rules}
            self.record("bars.quarantine", event.job_id, details=details)
        elif isinstance(event, ActionsIngested):
            self.record("actions.ingest", event.source,
                        details={"symbols": len(event.symbols), "rows": event.rows})  # fmt: skip

    def query(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> pl.DataFrame:
        """Return the latest `limit` records matching, oldest first."""
        return self.log.audit(since, until, actor=actor, tenant=tenant, action=action, limit=limit)
