"""`qv scheduler` (and the other operations commands)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, session
from quantivista.cli.render import Format, emit, frame_table
from quantivista.services.scheduler import Scheduler, run_scheduler
from quantivista.services.sla import SlaService, day_range

__all__ = ["audit", "scheduler", "sla"]


@app.command()
def scheduler(
    status: Annotated[
        bool, typer.Option("--status", help="Show each entry's last run and next slot, then exit.")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Run what is due now (if the lease is free), then exit.")
    ] = False,
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """Run scheduled jobs (nightly universe update, retention, backups, compaction, syncs).

    One scheduler is active per store (a lease); more wait as standbys. Probes and metrics
    answer on `probes.ports.scheduler` (9104); SIGTERM stops it after the running job.
    """
    with session(create=True) as rt:
        if status or once:
            sched = Scheduler.from_runtime(rt)
            if once:
                runs = sched.tick()
                sched.lease.release()
                for run in runs:
                    sys.stdout.write(json.dumps({"entry": run.key, **run.as_state()}) + "\n")
                if not sched.leader:
                    console.print("another scheduler holds the lease: nothing run")
                return
            table = sched.status()
            if fmt_ is Format.table:
                console.print(frame_table(table, "Schedule"))
            else:
                emit(table, fmt_, "")
            return
        run_scheduler(rt)


@app.command()
def audit(
    since: Annotated[datetime | None, typer.Option(help="From (ISO time, UTC).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Before (ISO time, UTC).")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor (api:<client>, cli:<user>).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The latest this many.")] = 100,
    fmt_: Annotated[
        Format, typer.Option("--format", "-f", help="table, json or csv.")
    ] = Format.table,
) -> None:
    """Show the audit trail: who (API client, tenant, CLI user) did what, oldest first."""
    as_utc = [t.replace(tzinfo=t.tzinfo or UTC) if t else None for t in (since, until)]
    with session() as rt:
        frame = rt.audit.query(
            as_utc[0], as_utc[1], actor=actor, tenant=tenant, action=action, limit=limit
        )
    if fmt_ is Format.table:
        console.print(frame_table(frame.drop("details"), "Audit trail"))
    else:
        emit(frame, fmt_, "")


@app.command()
def sla(
    from_: Annotated[date, typer.Option("--from", help="First day (UTC).", formats=["%Y-%m-%d"])],
    to: Annotated[date, typer.Option("--to", help="Last day, included.", formats=["%Y-%m-%d"])],
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """SLA of a period: uptime in market hours, freshness, retrieval success, API latency,
    quality score, against the targets in settings.sla; with uptime per session day."""
    with session() as rt:
        report = SlaService.from_runtime(rt).report(*day_range(from_, to))
    if fmt_ is not Format.table:
        sys.stdout.write(json.dumps(report.as_dict(), default=str) + "\n")
        return
    table = Table(title=f"SLA {from_} .. {to}", header_style="bold")
    for column in ("measure", "value", "target", "met", "detail"):
        table.add_column(column, justify="right" if column in ("value", "target") else "left")
    for row in report.measures.iter_rows(named=True):
        ratio = not row["measure"].endswith("(s)")
        met = {True: "[green]yes[/]", False: "[red]no[/]"}.get(row["met"], "-")
        table.add_row(row["measure"], _fmt(row["value"], ratio), _fmt(row["target"], ratio), met,
                      escape(row["detail"]))  # fmt: skip
    console.print(table)
    chart = Table(title="Uptime per session (market hours)", header_style="bold", box=None)
    for column in ("session", "uptime", "", "probes"):
        chart.add_column(column)
    for day in report.daily.iter_rows(named=True):
        up = day["uptime"]
        bar = (
            ""
            if up is None
            else "█" * round(up * 40) + "[dim]" + "·" * (40 - round(up * 40)) + "[/]"
        )
        colour = "green" if up is not None and up >= rt.settings.sla.uptime_target else "red"
        chart.add_row(str(day["session"]), _fmt(up, True), f"[{colour}]{bar}[/]",
                      f"{day['ok']}/{day['probes']}")  # fmt: skip
    console.print(chart)


def _fmt(value: float | None, ratio: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if ratio else f"{value:,.3f}"
