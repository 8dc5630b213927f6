"""`qv backfill`: plan a backfill (gaps, calls per provider, time under the quotas), queue it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from quantivista.cli.app import app, console, fail, session
from quantivista.services.backfill import BackfillPlan
from quantivista.services.host_model import HostCosts

__all__ = ["backfill", "model_line", "plan_table"]


def plan_table(plan: BackfillPlan) -> Table:
    """Return one row per provider: requests, symbols, calls, windows, predicted time."""
    table = Table(
        title=f"backfill plan {plan.timeframe} {plan.start} .. {plan.end}", header_style="bold"
    )
    table.add_column("provider", no_wrap=True)
    for col in ("requests", "symbols", "calls"):
        table.add_column(col, justify="right")
    table.add_column("windows")
    table.add_column("predicted", justify="right")
    for row in plan.providers.iter_rows(named=True):
        table.add_row(
            escape(row["provider"]),
            f"{row['requests']:,}",
            f"{row['symbols']:,}",
            f"{row['calls']:,}",
            escape(row["windows"]),
            _duration(row["predicted_s"]),
        )
    gaps = plan.gaps
    table.caption = (
        f"{gaps['symbol'].n_unique():,} symbols with {gaps.height:,} gaps"
        f" ({int(gaps['sessions'].sum() or 0):,} sessions); {plan.calls:,} calls;"
        f" predicted {_duration(plan.predicted_s)}; unservable runs: {plan.unservable.height:,}"
    )
    return table


def model_line(provider: str, terms: dict[str, float], workers: int) -> str:
    """Return the host model's terms for one provider as one line (`host_model.terms`)."""
    return (
        f"host model, {escape(provider)}: one worker {terms['task_s']:.3f} s per task;"
        f" {workers} worker(s) alone {_duration(terms['workers_s'])}; the calls under the"
        f" quota {_duration(terms['calls_s'])}; all CPU over the cores"
        f" {_duration(terms['cpu_s'])} (the provider's {_duration(terms['provider_s'])});"
        f" played out {_duration(terms['played_s'])} (worker CPU on the path"
        f" {terms['on_path']:.0%}, slowdown {terms['slowdown']:.2f})"
        f" + job {terms['job_s'] + terms['pickup_s']:.2f} s"
    )


def _host_cpus() -> float:
    """Return the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return float(len(os.sched_getaffinity(0)))
    return float(os.cpu_count() or 1)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def backfill(
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Symbols (or --symbols-file).")
    ] = None,
    start: Annotated[str, typer.Option(help="First date (YYYY-MM-DD).")] = "",
    end: Annotated[str, typer.Option(help="Last date, inclusive (YYYY-MM-DD).")] = "",
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="1m, 1h, 1d...")] = "1d",
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", "-p", help="Providers that may serve it (repeat)."),
    ] = None,
    symbols_file: Annotated[
        Path | None, typer.Option(help="A file with one symbol per line.")
    ] = None,
    plan_only: Annotated[
        bool, typer.Option("--plan", help="Print the plan; queue nothing.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes the time assumes.")] = 1,
    latency_ms: Annotated[
        float, typer.Option(min=0, help="A call's round trip the time assumes.")
    ] = 0.0,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue of the jobs.")] = None,
    worker_cpu_ms: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="A worker's CPU per task (fetch, parse, store), ms: with any"
            " host cost the time plays the backfill out on the host's CPUs.",
        ),
    ] = None,
    provider_cpu_ms: Annotated[
        float, typer.Option(min=0, help="A provider on the same host: its CPU per call, ms.")
    ] = 0.0,
    store_cpu_ms: Annotated[
        float, typer.Option(min=0, help="The database's CPU per task, ms.")
    ] = 0.0,
    cpus: Annotated[
        float | None, typer.Option(min=0.1, help="CPUs the run shares (default: this host's).")
    ] = None,
    job_s: Annotated[
        float, typer.Option(min=0, help="A job's fixed seconds besides its tasks'.")
    ] = 0.0,
    slowdown: Annotated[
        float, typer.Option(min=1, help="Wall seconds per CPU second (other work on the host).")
    ] = 1.0,
    task_ms: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="One worker's measured wall time per task, ms (two jobs' difference over"
            " their tasks'): the model plays one worker out in it, then adds what N workers"
            " change (contention, quota).",
        ),
    ] = None,
) -> None:
    """Fill what the store lacks: the gap map against the exchange calendar, the fewest
    provider calls (look-back, pages, free tiers first), the time under the quotas.

    Without --plan the requests are queued as jobs for `qv worker`s. With --worker-cpu-ms
    or --task-ms (perf/workers.py measures them and the other host costs) the time also
    counts the CPU the workers, a provider on the same host and the database share, and the
    model's terms are printed.
    """
    names = list(symbols or [])
    if symbols_file is not None:
        names += [s.strip() for s in symbols_file.read_text().splitlines() if s.strip()]
    if not names:
        fail("name symbols or give --symbols-file", code=2)
    if not start or not end:
        fail("--start and --end are required", code=2)
    if task_ms is not None and slowdown != 1.0:
        fail("--task-ms fits the slowdown itself: give one of --task-ms and --slowdown", code=2)
    if task_ms is not None and not worker_cpu_ms:
        fail("--task-ms is fitted to the worker's CPU: give --worker-cpu-ms too", code=2)
    host = None
    costs = (provider_cpu_ms, store_cpu_ms, job_s, slowdown)
    given = any(v is not None for v in (worker_cpu_ms, cpus, task_ms)) or costs != (
        0.0, 0.0, 0.0, 1.0)  # fmt: skip
    if given:  # any host cost given: the backfill is played out on the host's CPUs
        host = HostCosts(
            worker_s_per_task=(worker_cpu_ms or 0.0) / 1000,
            provider_s_per_call=provider_cpu_ms / 1000,
            store_s_per_task=store_cpu_ms / 1000,
            cpus=cpus if cpus is not None else _host_cpus(),
            slowdown=slowdown,
            job_s=job_s,
            task_s=(task_ms or 0.0) / 1000,
        )
    with session(create=True) as rt:  # a plan against an empty store is a full one
        plan = rt.backfill.plan(
            names, start, end, timeframe, provider, workers=workers,
            latency_s=latency_ms / 1000, host=host,
        )  # fmt: skip
        console.print(plan_table(plan))
        for name, terms in plan.model.items():
            console.print(model_line(name, terms, workers))
        if plan_only or plan.requests.is_empty():
            return
        jobs = rt.backfill.submit(plan, queue=queue)
        for job in jobs:
            console.print(
                f"queued {escape(job.job_id)}: {len(job.symbols):,} symbols via"
                f" {escape(job.source_id)} in {job.tasks} tasks"
            )
