"""`qv sources`, `qv rules`, `qv ingestion-jobs`, `qv lineage`, `qv dead-letters`,
`qv simulate-workflows`: the reporting-side Data Ingestion Service."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from quantivista.cli.app import app, console, fail, session
from quantivista.cli.render import Format, emit, fmt
from quantivista.model.workflow import (
    DataFormat,
    DataSource,
    DataSourceType,
    IngestionJob,
    IngestionMode,
    QualityCheck,
    RuleType,
    TransformationRule,
)
from quantivista.services.workflow_ingestion import simulate

__all__ = ["rules_app", "sources_app"]

sources_app = typer.Typer(help="Reporting-side sources: list, add, sync, disable, replay.")
rules_app = typer.Typer(help="Transformation rules (versioned): list, add, show, disable.")
app.add_typer(sources_app, name="sources")
app.add_typer(rules_app, name="rules")

TENANT = Annotated[str, typer.Option("--tenant", help="The tenant acted for.")]
FORMAT = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")]


def _job_table(jobs: list[IngestionJob], title: str) -> Table:
    table = Table(title=title, header_style="bold")
    for name in ("job", "source", "status", "processed", "failed", "filtered", "started", "secs"):
        table.add_column(name, justify="right" if name in ("processed", "failed", "filtered",
                                                           "secs") else "left")  # fmt: skip
    for job in jobs:
        secs = (job.end_time - job.start_time).total_seconds() if job.end_time else None
        colour = {"succeeded": "green", "partial": "yellow", "failed": "red"}.get(job.status, "")
        table.add_row(
            job.job_id, escape(job.source_id),
            f"[{colour}]{job.status.value}[/]" if colour else job.status.value,
            f"{job.records_processed:,}", f"{job.records_failed:,}", f"{job.records_filtered:,}",
            job.start_time.strftime("%Y-%m-%d %H:%M:%S"), fmt(secs),
        )  # fmt: skip
    return table


def _jobs_frame(jobs: list[IngestionJob]) -> pl.DataFrame:
    return pl.DataFrame([j.model_dump(mode="json", exclude={"inputs"}) for j in jobs])


# -- sources --------------------------------------------------------------------------------------
@sources_app.command("list")
def sources_list(tenant: TENANT = "default", fmt_: FORMAT = Format.table) -> None:
    """List the tenant's sources."""
    with session() as rt:
        found = rt.workflows.sources(tenant)
    frame = pl.DataFrame(
        [
            {
                "source_id": s.source_id,
                "type": s.source_type.value,
                "mode": s.ingestion_mode.value,
                "format": s.data_format.value,
                "table": s.target_table,
                "schedule": s.schedule,
                "rules": ",".join(s.transformation_rules),
                "checks": len(s.quality_checks),
                "enabled": s.enabled,
                "location": s.location,
            }
            for s in found
        ]
    )
    if frame.is_empty():
        console.print(f"tenant {escape(tenant)} has no sources (add one: qv sources add)")
        return
    emit(frame, fmt_, f"sources of {tenant}")


@sources_app.command("add")
def sources_add(
    source_id: Annotated[str, typer.Argument(help="The source's id.")],
    location: Annotated[str, typer.Option(help="fsspec URL or glob, postgresql://, http(s)://")],
    source_type: Annotated[DataSourceType, typer.Option("--type")],
    data_format: Annotated[DataFormat, typer.Option("--format")],
    table: Annotated[str, typer.Option(help="The lake table.")] = "portfolio_data_lake",
    mode: Annotated[IngestionMode, typer.Option()] = IngestionMode.ON_DEMAND,
    schedule: Annotated[str | None, typer.Option(help="Cron, for BATCH_SCHEDULED.")] = None,
    rule: Annotated[list[str] | None, typer.Option(help="Rule ids, in order.")] = None,
    checks: Annotated[
        Path | None, typer.Option(help="A JSON file with a list of quality checks.")
    ] = None,
    config: Annotated[str | None, typer.Option(help="connection_config as JSON.")] = None,
    tenant: TENANT = "default",
) -> None:
    """Add (or replace) a source; its schedule, rules and checks are validated."""
    try:
        loaded = json.loads(checks.read_text()) if checks else []
        quality = [QualityCheck.model_validate(c) for c in loaded]
        options = json.loads(config) if config else {}
    except (OSError, ValueError) as exc:  # a missing file, bad JSON, a check that is not one
        fail(f"error: --checks or --config: {exc}", code=2)
    source = DataSource(
        source_id=source_id, source_type=source_type, ingestion_mode=mode,
        data_format=data_format, location=location, target_table=table, schedule=schedule,
        transformation_rules=rule or [], quality_checks=quality,
        connection_config=options,
    )  # fmt: skip
    with session(create=True) as rt:
        saved = rt.workflows.register_source(tenant, source)
    console.print(f"source [bold]{escape(saved.source_id)}[/] saved for tenant {escape(tenant)}")


@sources_app.command("sync")
def sources_sync(
    source_ids: Annotated[list[str] | None, typer.Argument(help="Sources (default: all).")] = None,
    tenant: TENANT = "default",
) -> None:
    """Run sources now, with progress; exit 1 if a job failed."""
    with session() as rt:
        ids = source_ids or [s.source_id for s in rt.workflows.sources(tenant) if s.enabled]
        if not ids:
            fail(f"tenant {tenant} has no enabled sources")
        done: list[IngestionJob] = []
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[source]}"), TimeElapsedColumn(), console=console,
        )  # fmt: skip
        with progress:
            task = progress.add_task("syncing", total=len(ids), source="")
            for source_id in ids:  # one job per source
                progress.update(task, source=source_id)
                done.append(rt.workflows.sync(tenant, source_id))
                progress.advance(task)
    console.print(_job_table(done, "jobs"))
    if any(j.status.value == "failed" for j in done):
        for job in done:
            for detail in job.error_details or []:
                console.print(f"[red]{escape(job.source_id)}:[/] {escape(str(detail['message']))}")
        raise typer.Exit(code=1)


@sources_app.command("disable")
def sources_disable(source_id: str, tenant: TENANT = "default") -> None:
    """Disable a source (no longer scheduled or synced)."""
    with session() as rt:
        rt.workflows.set_enabled(tenant, source_id, False)
    console.print(f"source {escape(source_id)} disabled")


@sources_app.command("enable")
def sources_enable(source_id: str, tenant: TENANT = "default") -> None:
    """Enable a source again."""
    with session() as rt:
        rt.workflows.set_enabled(tenant, source_id, True)
    console.print(f"source {escape(source_id)} enabled")


@sources_app.command("replay")
def sources_replay(
    source_id: str,
    job: Annotated[str | None, typer.Option(help="Only this job's dead letters.")] = None,
    tenant: TENANT = "default",
) -> None:
    """Send a source's held dead letters through its (fixed) rules and checks again."""
    with session() as rt:
        done = rt.workflows.replay(tenant, source_id, job)
    console.print(_job_table([done], "replay"))


# -- jobs, lineage, dead letters ------------------------------------------------------------------
@app.command("ingestion-jobs")
def ingestion_jobs(
    source: Annotated[str | None, typer.Option(help="Only this source's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    tenant: TENANT = "default",
    fmt_: FORMAT = Format.table,
) -> None:
    """List the tenant's reporting-side ingestion jobs, newest first."""
    with session() as rt:
        found = rt.workflows.jobs(tenant, source, limit)
    if fmt_ is not Format.table:
        emit(_jobs_frame(found), fmt_, "jobs")
        return
    console.print(_job_table(found, f"ingestion jobs of {tenant}"))


@app.command()
def lineage(job_id: str, tenant: TENANT = "default") -> None:
    """Show a job's lineage: source, rule versions, inputs (sha256, cursor), lake table."""
    with session() as rt:
        found = rt.workflows.lineage(tenant, job_id)
        report = rt.workflows.report(tenant, job_id) if found["status"] != "failed" else None
    source: dict[str, Any] = found["source"]
    console.print(
        f"[bold]{job_id}[/] ({found['status']}) <- source [bold]{escape(source['source_id'])}[/]"
        f" ({source['source_type']}, {source['data_format']}) -> {found['lake_table']}"
    )
    rules = ", ".join(f"{k} v{v}" for k, v in found["rule_versions"].items()) or "none"
    console.print(f"rules: {escape(rules)}")
    if report is not None:
        console.print(
            f"quality score {report.quality_score:.4f}: {report.valid_records:,} valid,"
            f" {report.invalid_records:,} invalid of {report.total_records:,}"
        )
    table = Table(title="inputs", header_style="bold")
    for name in ("input", "sha256 / cursor", "offsets", "rows"):
        table.add_column(name, overflow="fold")
    for entry in found["inputs"]:
        mark = entry["sha256"] or (json.dumps(entry["cursor"]) if entry["cursor"] else "")
        table.add_row(
            escape(entry["input_uri"]), escape(mark),
            f"{entry['offset_start']}-{entry['offset_end']}", f"{entry['rows']:,}",
        )  # fmt: skip
    console.print(table)


@app.command("dead-letters")
def dead_letters(
    source: Annotated[str | None, typer.Option(help="Only this source's.")] = None,
    job: Annotated[str | None, typer.Option(help="Only this job's.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 30,
    tenant: TENANT = "default",
    fmt_: FORMAT = Format.table,
) -> None:
    """Show held records with the stage and reason they failed (replay: qv sources replay)."""
    with session() as rt:
        held = rt.workflows.dead_letters(tenant, job, source)
    emit(held.select("id", "job_id", "stage", "reason", "record").head(limit), fmt_,
         f"dead letters: {held.height:,}")  # fmt: skip


# -- rules ----------------------------------------------------------------------------------------
@rules_app.command("list")
def rules_list(tenant: TENANT = "default", fmt_: FORMAT = Format.table) -> None:
    """List the latest version of each rule."""
    with session() as rt:
        found = rt.workflows.rules(tenant)
    frame = pl.DataFrame([r.model_dump(mode="json") for r in found])
    if frame.is_empty():
        console.print("no rules")
        return
    emit(frame, fmt_, f"rules of {tenant}")


@rules_app.command("add")
def rules_add(
    rule_id: str,
    rule_type: Annotated[RuleType, typer.Option("--type")],
    logic: Annotated[str, typer.Option(help="The transformation logic.")] = "",
    source_field: Annotated[str | None, typer.Option("--source-field")] = None,
    target_field: Annotated[str | None, typer.Option("--target-field")] = None,
    criteria: Annotated[str | None, typer.Option(help="A validation condition.")] = None,
    tenant: TENANT = "default",
) -> None:
    """Add a rule, or a new version of one (validated: unknown type, bad expression)."""
    rule = TransformationRule(
        rule_id=rule_id, rule_type=rule_type, transformation_logic=logic,
        source_field=source_field, target_field=target_field, validation_criteria=criteria,
    )  # fmt: skip
    with session(create=True) as rt:
        saved = rt.workflows.save_rule(tenant, rule)
    console.print(f"rule [bold]{escape(saved.rule_id)}[/] version {saved.version}")


@rules_app.command("show")
def rules_show(rule_id: str, tenant: TENANT = "default", fmt_: FORMAT = Format.table) -> None:
    """Show every version of a rule."""
    with session() as rt:
        versions = rt.workflows.rule_history(tenant, rule_id)
    emit(pl.DataFrame([r.model_dump(mode="json") for r in versions]), fmt_, f"rule {rule_id}")


@rules_app.command("disable")
def rules_disable(rule_id: str, tenant: TENANT = "default") -> None:
    """Disable a rule (stored as a new, disabled version)."""
    with session() as rt:
        saved = rt.workflows.disable_rule(tenant, rule_id)
    console.print(f"rule {escape(rule_id)} disabled (version {saved.version})")


@app.command("simulate-workflows")
def simulate_workflows(
    out: Annotated[Path, typer.Argument(help="Folder for the files.")],
    seed: Annotated[int, typer.Option()] = 7,
    rows: Annotated[int, typer.Option(min=1)] = 10_000,
    error_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.02,
) -> None:
    """Write simulated workflow data (positions, performance, risk, executions, news,
    analytics) in CSV, NDJSON, Parquet, Avro and Protobuf, with injected errors."""
    written = simulate(out, seed=seed, rows=rows, error_rate=error_rate)
    sys.stdout.write("".join(f"{p}\n" for p in written))
