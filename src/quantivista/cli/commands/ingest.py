"""`qv ingest`, `qv jobs`, `qv status`: ingestion jobs and what the store holds."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import date
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from quantivista.cli.app import app, console, fail, session
from quantivista.cli.render import (
    Format,
    emit,
    job_line,
    jobs_frame,
    jobs_table,
    progress_bar,
    store_table,
)
from quantivista.model.jobs import IngestionJob, JobStatus
from quantivista.runtime import Runtime
from quantivista.services.ingestion import Progress as ProgressFn

__all__ = ["ingest", "jobs", "run_ingest", "status", "wait_for"]


def run_ingest(
    rt: Runtime,
    symbols: Sequence[str],
    start: str | date,
    end: str | date,
    timeframe: str,
    providers: Sequence[str] | None,
    label: str,
) -> IngestionJob:
    """Run an ingestion job with a progress bar per symbol."""
    with progress_bar() as bar:
        tick = _ticker(bar, label, len(symbols))
        return rt.ingestion.ingest(symbols, start, end, timeframe, providers, progress=tick)


def _ticker(bar: Progress, label: str, total: int | None = None) -> ProgressFn:
    task = bar.add_task(label, total=total, symbol="")

    def tick(symbol: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, symbol=escape(symbol))

    return tick


@app.command()
def ingest(
    symbols: Annotated[list[str], typer.Argument(help="Symbols to ingest.")],
    start: Annotated[str, typer.Option(help="First date (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last date, inclusive (YYYY-MM-DD).")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m, 5m, 1h, 1d...")] = "1d",
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", "-p", help="Provider, repeat for failover order."),
    ] = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Queue the job for `qv worker`s; print its id.")
    ] = False,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="With --submit: the queue (workers.queue).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="With --submit: follow the job until workers end it.")
    ] = False,
) -> None:
    """Fetch bars from providers, validate them and store them (here, or by workers)."""
    if (queue or wait) and not submit:
        fail("--queue and --wait go with --submit", code=2)
    with session(create=True) as rt:
        if submit:
            job = rt.ingestion.enqueue(symbols, start, end, timeframe, provider, queue=queue)
            console.print(
                f"queued {escape(job.job_id)}: {len(job.symbols):,} symbols in {job.tasks} tasks"
                f" on queue {escape(job.queue or '')!r}"
            )
            if not wait:
                return
            job = wait_for(rt, job)
        else:
            job = run_ingest(rt, symbols, start, end, timeframe, provider, "ingesting")
        job_line(job)
        if job.status is JobStatus.FAILED:
            raise typer.Exit(code=1)


def wait_for(rt: Runtime, job: IngestionJob) -> IngestionJob:
    """Follow a queued job with a progress bar of its tasks until it ends."""
    with progress_bar() as bar:
        task = bar.add_task(f"waiting for {job.job_id}", total=job.tasks, symbol="")

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return rt.ingestion.wait(job.job_id, progress=tick)


@app.command()
def jobs(
    limit: Annotated[int, typer.Option(min=1, help="How many jobs.")] = 20,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover",
            help="Resume failed jobs' unfinished tasks (a crashed process, a lapsed lease).",
        ),
    ] = False,
    job: Annotated[
        str | None, typer.Option("--job", help="Only this job (with --recover).")
    ] = None,
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = (
        Format.table
    ),
) -> None:
    """List recent ingestion jobs, or recover the ones a crash left unfinished."""
    with session() as rt:
        if not recover:
            listed = rt.ingestion.jobs(limit=limit)
            progress = {j.job_id: rt.ingestion.progress(j.job_id) for j in listed}
            if fmt_ is Format.table:
                console.print(jobs_table(listed, progress=progress))
            else:
                emit(jobs_frame(listed, progress), fmt_, "jobs")
            return
        targets = [job] if job else [j.job_id for j in rt.ingestion.recoverable()]
        if not targets:
            console.print("no job needs recovery")
            return
        failed = False
        for target in targets:
            with progress_bar() as bar:
                tick = _ticker(bar, f"recovering {target}")
                (done,) = rt.ingestion.recover(target, progress=tick)
            job_line(done)
            failed = failed or done.status is JobStatus.FAILED
        if failed:
            raise typer.Exit(code=1)


@app.command()
def status(
    fmt_: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = (
        Format.table
    ),
) -> None:
    """Show what the store holds, the recent jobs and the quarantine.

    `--format csv` prints one row per (timeframe, symbol); `json` adds totals and jobs.
    """
    with session() as rt:
        stats = rt.queries.status()
        recent = rt.ingestion.jobs(limit=5)
        quarantined = rt.quality.quarantined()
        actions = rt.queries.actions()
        where = rt.maintenance.describes
        report = rt.maintenance.storage_report()
    if fmt_ is Format.csv:
        emit(stats, fmt_, "store")
        return
    if fmt_ is Format.json:
        document = {
            "store": where,
            "series": stats.to_dicts(),
            "actions": actions.height,
            "quarantined": quarantined,
            "jobs": jobs_frame(recent).to_dicts(),
        }
        sys.stdout.write(json.dumps(document, default=str, indent=1) + "\n")
        return
    console.print(f"[bold]store:[/] {escape(where)}")
    if stats.is_empty():
        console.print("the store is empty: try [bold]qv demo[/] or [bold]qv ingest[/]")
        return
    console.print(store_table(stats, report))
    console.print(
        f"corporate actions stored: {actions.height:,}    rows in quarantine: {quarantined:,}"
    )
    if recent:
        console.print(jobs_table(recent))
