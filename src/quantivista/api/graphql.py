"""GraphQL at /graphql (strawberry): bars (adjusted, as of), instruments, actions, quality.

The same services and the same credentials as REST: a bearer token or an X-API-Key header.
`subscription { bars(symbols: [...]) }` streams from the WebSocket hub's bus feed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from datetime import date, datetime
from typing import Any, cast

import polars as pl
import strawberry
from starlette.requests import HTTPConnection
from strawberry.fastapi import BaseContext, GraphQLRouter
from strawberry.scalars import JSON
from strawberry.types import Info

from quantivista.api.deps import Caller, authenticated
from quantivista.api.state import ApiState
from quantivista.bus.events import BarsStreamed, Event
from quantivista.errors import PermissionDeniedError
from quantivista.model.auth import Scope
from quantivista.services.queries import BarQuery

__all__ = ["graphql_router"]


class Context(BaseContext):
    """Per request: the API state and the authenticated caller."""

    def __init__(self, state: ApiState, caller: Caller) -> None:
        super().__init__()
        self.state = state
        self.caller = caller


def _caller(info: Info[Context, Any], scope: Scope) -> tuple[ApiState, Caller]:
    who = info.context.caller
    if not who.principal.can(scope):
        raise PermissionDeniedError(f"this needs the {scope.value} scope")
    return info.context.state, who


@strawberry.type
class Bar:
    """One bar in the canonical schema."""

    symbol: str
    timeframe: str
    ts: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    vwap: float | None
    trades: int | None
    provider: str | None
    quality_flags: int
    ingested_at: datetime | None
    job_id: str | None


@strawberry.type
class Action:
    """One corporate action."""

    symbol: str
    action_type: str
    ex_date: date
    ratio: float | None
    amount: float | None
    currency: str | None
    new_symbol: str | None
    provider: str | None


@strawberry.type
class Instrument:
    """An instrument of the master."""

    instrument_id: str
    name: str | None
    asset_class: str | None
    currency: str | None
    exchange: str | None
    isin: str | None
    sector: str | None


@strawberry.type
class QualityReport:
    """A job's data-quality report."""

    job_id: str
    total_records: int
    valid_records: int
    invalid_records: int
    quality_score: float
    rule_counts: JSON


def _rows(df: pl.DataFrame, cls: Any) -> list[Any]:
    names = [f.name for f in dataclasses.fields(cls)]
    return [cls(**row) for row in df.select(names).iter_rows(named=True)]  # a page of rows


def _bar(row: dict[str, Any]) -> Bar:
    """Return a bar of a live feed's row (JSON-ready values)."""
    values: dict[str, Any] = {f.name: row.get(f.name) for f in dataclasses.fields(Bar)}
    values["ts"] = datetime.fromisoformat(str(row["ts"]))
    values["quality_flags"] = int(row.get("quality_flags") or 0)
    ingested = row.get("ingested_at")
    values["ingested_at"] = datetime.fromisoformat(str(ingested)) if ingested else None
    return Bar(**values)


@strawberry.type
class Query:
    """Read market data."""

    @strawberry.field(description="Stored bars; adjust: none, splits, all; asOf: knowledge time.")
    def bars(
        self,
        info: Info[Context, Any],
        symbols: list[str],
        timeframe: str = "1d",
        start: date | None = None,
        end: date | None = None,
        adjust: str = "none",
        as_of: datetime | None = None,
        limit: int = 10_000,
    ) -> list[Bar]:
        state, who = _caller(info, Scope.READ_BARS)
        state.auth.entitled(who.tenant, dataset="bars", symbols=symbols, timeframe=timeframe)
        query = BarQuery.of(symbols, start, end, timeframe, adjust=adjust, known_at=as_of)  # type: ignore[arg-type]
        return _rows(state.runtime.queries.bars(query).head(max(1, limit)), Bar)

    @strawberry.field(description="Corporate actions of some symbols.")
    def actions(self, info: Info[Context, Any], symbols: list[str]) -> list[Action]:
        state, who = _caller(info, Scope.READ_REFERENCE)
        state.auth.entitled(who.tenant, dataset="actions", symbols=symbols)
        return _rows(state.runtime.queries.actions(symbols), Action)

    @strawberry.field(description="The instrument master.")
    def instruments(self, info: Info[Context, Any]) -> list[Instrument]:
        state, who = _caller(info, Scope.READ_REFERENCE)
        state.auth.entitled(who.tenant, dataset="instruments")
        return _rows(state.runtime.reference.instruments.instruments(), Instrument)

    @strawberry.field(description="The data-quality report of one of the tenant's jobs.")
    def quality(self, info: Info[Context, Any], job_id: str) -> QualityReport:
        state, who = _caller(info, Scope.READ_BARS)
        job = state.runtime.ingestion.job(job_id)
        if job.tenant != who.principal.tenant and not (
            job.tenant is None and who.principal.can(Scope.ADMIN)
        ):
            raise PermissionDeniedError("unknown job")
        report = state.runtime.quality.report(job_id)
        return QualityReport(
            job_id=report.job_id, total_records=report.total_records,
            valid_records=report.valid_records, invalid_records=report.invalid_records,
            quality_score=report.quality_score, rule_counts=cast(JSON, report.rule_counts),
        )  # fmt: skip


@strawberry.type
class Subscription:
    """Live data."""

    @strawberry.subscription(description="Bars of a live feed as they are published.")
    async def bars(self, info: Info[Context, Any], symbols: list[str]) -> AsyncGenerator[Bar, None]:
        state, who = _caller(info, Scope.READ_BARS)
        state.auth.entitled(who.tenant, dataset="bars", symbols=symbols)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(4096)
        loop = asyncio.get_running_loop()
        wanted = set(symbols)

        def on_event(event: Event) -> None:
            if isinstance(event, BarsStreamed):
                for row in event.rows:
                    if row.get("symbol") in wanted:
                        loop.call_soon_threadsafe(queue.put_nowait, row)

        sid = state.runtime.bus.subscribe(BarsStreamed.topic, on_event, name="graphql")
        try:
            while True:
                yield _bar(await queue.get())
        finally:
            state.runtime.bus.unsubscribe(sid)


SCHEMA = strawberry.Schema(query=Query, subscription=Subscription)


async def _context(connection: HTTPConnection) -> Context:
    """Authenticate an HTTP request or a WebSocket handshake like the REST routes do."""
    state: ApiState = connection.app.state.qv
    headers = connection.headers
    principal = await authenticated(state, headers.get("authorization"), headers.get("x-api-key"))
    if connection.scope["type"] == "http":
        state.admit(principal.client_id)
    return Context(state, Caller(principal, state.auth.tenant(principal.tenant)))


def graphql_router() -> GraphQLRouter[Context, None]:
    """Return the /graphql router (queries over HTTP, subscriptions over WebSocket)."""
    return GraphQLRouter(SCHEMA, context_getter=_context, path="/graphql")
